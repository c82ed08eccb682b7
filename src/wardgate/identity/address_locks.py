"""`AddressLocks`: one client address's sign-in attempts one at a time, in this process and, with
several worker processes (`UVICORN_WORKERS`), across them.

The per-address sign-in limit counts only failures, so it must check, verify the password and count
as one step: two concurrent guesses must not both pass the check. The locks are striped (64 of
them: bounded however many addresses come) on a stable hash, so that every process picks the same
stripe for an address; with a lock directory each stripe is also a lock file the workers share.
A wait past `WAIT_SECONDS` is a BusyError (503), never a queue that grows.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from wardgate.errors import BusyError

WAIT_SECONDS = 5.0
_STRIPES = 64


class AddressLocks:
    """Striped locks by client address; `lock_dir` makes them span the processes of a machine."""

    def __init__(self, lock_dir: Path | None = None) -> None:
        self._threads = [threading.Lock() for _ in range(_STRIPES)]
        self._lock_dir = lock_dir
        self._files: dict[int, int] = {}  # stripe: open lock file (opened under its thread lock)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """Hold the lock of `key`'s stripe; BusyError when it does not come within the bound."""
        stripe = zlib.crc32(key.encode()) % _STRIPES  # the same stripe in every process
        deadline = time.monotonic() + WAIT_SECONDS
        lock = self._threads[stripe]
        if not lock.acquire(timeout=WAIT_SECONDS):
            raise _busy()
        try:
            if self._lock_dir is None:
                yield
                return
            descriptor = self._file(self._lock_dir, stripe)
            while True:  # flock has no timeout: poll, without blocking the thread for good
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise _busy() from None
                    time.sleep(0.005)
            try:
                yield
            finally:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
        finally:
            lock.release()

    def _file(self, directory: Path, stripe: int) -> int:
        if stripe not in self._files:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._files[stripe] = os.open(directory / f"signin-{stripe}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        return self._files[stripe]


def _busy() -> BusyError:
    return BusyError("Too many sign-ins at once from your address; try again in a moment.", retry_after=2)
