"""`python -m wardgate` (and the `wardgate` command) runs the command-line interface.

The garbage collector is off while the interface and everything it serves with are imported and
built: start-up makes about 200,000 objects and almost no garbage, and the collections the
allocations would trigger meanwhile cost 130 ms of a one-second start. `wardgate.cli.main` turns it
back on for every command; `serve` first freezes what start-up built (`server.settle_heap`).
"""

import gc

gc.disable()

from wardgate.cli import main  # noqa: E402 (after the collector is off)

if __name__ == "__main__":  # not when a spawned worker process imports it
    raise SystemExit(main())
