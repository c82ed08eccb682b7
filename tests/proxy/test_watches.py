"""The relay's disconnect watches (`_Watches`): one timer for every exchange's watch, each started
`WATCH_AFTER` seconds after it was added, none started once discarded, and no ring repeated for
nothing. Over TCP, clients that leave are found by them: tests/proxy/test_proxy.py."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from wardgate.http.relay import streaming
from wardgate.http.relay.streaming import WATCH_AFTER, _Watches


class Watch:
    """Stands in for one exchange's watch: records when it is started."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.added = loop.time()
        self.started: float | None = None

    def start(self) -> None:
        self.started = self.loop.time()


def test_each_watch_starts_after_its_wait_and_a_discarded_one_never(monkeypatch: pytest.MonkeyPatch) -> None:
    """Added a millisecond apart, twenty watches each start `WATCH_AFTER` after they were added (the
    timer is set again for the next one due), and the ring is not repeated until the clock ticks:
    uvloop keeps time in whole milliseconds, and a timer set again for a due time reached but for a
    float's error rang at once, hundreds of times, for about a fifth of the watches."""
    rings = 0
    ring = _Watches._ring

    def counted(self: _Watches) -> None:
        nonlocal rings
        rings += 1
        ring(self)

    monkeypatch.setattr(_Watches, "_ring", counted)

    async def scenario() -> list[Watch]:
        loop = asyncio.get_running_loop()
        watches = _Watches(loop)
        made = []
        for _ in range(20):
            watch = Watch(loop)
            made.append(watch)
            watches.add(watch)  # type: ignore[arg-type]
            await asyncio.sleep(0.001)
        watches.discard(made[5])  # type: ignore[arg-type]
        await asyncio.sleep(WATCH_AFTER + 0.1)
        return made

    made = uvloop.run(scenario())
    assert made[5].started is None
    others = [watch for i, watch in enumerate(made) if i != 5]
    # Within a tick of its time is on time; compared as the code compares (the float sums differ).
    tick = streaming.CLOCK_TICK
    assert all(w.started is not None and w.added + WATCH_AFTER <= w.started + tick for w in others)
    assert rings <= 2 * len(others)
