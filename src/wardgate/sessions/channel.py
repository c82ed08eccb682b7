"""Change channels: how one process tells the others "the change log moved, sync now".

Notices carry no data — the database stays the truth and a sync reads it — so a lost, duplicated or
forged notice can only cause an extra sync, never an accepted token. Three implementations:

- `RedisChangeChannel` (in `redis_channel`): Redis pub/sub on `{prefix}:auth:changes`, across
  instances. While the subscription is down the instance cannot know what it missed: `ViewSync`
  marks its view untrusted and every request is checked against the database (fail closed) until
  the subscription is back and a full sync has run.
- `FileChangeChannel`: the worker processes of one instance (`UVICORN_WORKERS`) without Redis. A
  notice is a new stamp written into a small shared file that every worker maps into memory and
  looks at every `_FILE_LOOK_EVERY` seconds: reading 8 bytes of shared memory costs nothing, and a
  stamp is state, not a message, so a notice cannot be lost while a worker is busy or restarting.
- `InProcessChannel`: the processes' own hub, for a single instance without Redis (the poll of the
  change log is then the only way to learn of other writers, such as the command line). Every
  listener of one hub hears every notice at once, so several instances in one process (tests) stay
  in step without Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import mmap
import os
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)
_FILE_LOOK_EVERY = 0.01  # seconds between looks at the shared stamp: revocations reach every worker in ~10 ms
_STAMP = struct.Struct("<Q")

OnNotice = Callable[[], Awaitable[None]]
OnState = Callable[[bool], Awaitable[None]]


class ChangeChannel(Protocol):
    """Publish and receive "sync now" notices."""

    @property
    def connected(self) -> bool:
        """True while notices from the other writers reach this process."""

    def publish(self) -> None:
        """Tell the others to sync (best effort: their poll is the safety net). Any thread."""

    async def listen(self, on_notice: OnNotice, on_state: OnState) -> None:
        """Receive forever; `on_state(True/False)` as reception comes and goes."""

    def close(self) -> None:
        """Release connections."""


class InProcessChannel:
    """Notices between the listeners of one process (one hub)."""

    def __init__(self) -> None:
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """Always: nothing can be missed inside one process."""
        return True

    def publish(self) -> None:
        """Wake every listener (safe from worker threads)."""
        with self._lock:
            listeners = list(self._listeners)
        for loop, event in listeners:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def listen(self, on_notice: OnNotice, on_state: OnState) -> None:
        """Call `on_notice` after each publish until cancelled."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._listeners.append(entry)
        try:
            await on_state(True)
            while True:
                await entry[1].wait()
                entry[1].clear()
                await on_notice()
        finally:
            with self._lock:
                self._listeners.remove(entry)

    def close(self) -> None:
        """Nothing to release."""


class FileChangeChannel:
    """Notices between the processes of one machine through a stamp in a shared, memory-mapped file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(descriptor).st_size < _STAMP.size:
                os.ftruncate(descriptor, _STAMP.size)  # zeros; a concurrent grow to the same size is harmless
            self._map = mmap.mmap(descriptor, _STAMP.size)
        finally:
            os.close(descriptor)  # the mapping keeps the file open
        # Unique per notice across processes: a writer's pid and its own sequence. Any change of the
        # stamp means "sync"; two writers racing leave one of their stamps, which is still a change.
        self._sequence = itertools.count(1)
        self._closing = False

    @property
    def connected(self) -> bool:
        """Always: a stamp is state in the file, not a message that can be missed."""
        return True

    def publish(self) -> None:
        """Write a new stamp (any thread; an aligned 8-byte store is never seen half-written)."""
        if not self._closing:
            self._map[: _STAMP.size] = _STAMP.pack((os.getpid() << 32 | next(self._sequence)) & (2**64 - 1))

    async def listen(self, on_notice: OnNotice, on_state: OnState) -> None:
        """Look at the stamp every `_FILE_LOOK_EVERY` seconds; call `on_notice` when it changed."""
        seen = self._map[: _STAMP.size]
        await on_state(True)
        while not self._closing:
            await asyncio.sleep(_FILE_LOOK_EVERY)
            stamp = self._map[: _STAMP.size]
            if stamp != seen:
                seen = stamp
                await on_notice()

    def close(self) -> None:
        """Stop listening; the mapping is released with the object (a listener may still look once)."""
        self._closing = True


def channel_from_url(redis_url: str | None, *, prefix: str, shared_file: Path | None = None) -> ChangeChannel:
    """Redis's channel when `REDIS_URL` is set; else the workers' shared file when there are
    several worker processes (`shared_file`); else this process's own."""
    if redis_url:
        # redis-py (7 MB, 60 ms of imports) is loaded only when Redis is configured.
        from wardgate.sessions.redis_channel import RedisChangeChannel

        return RedisChangeChannel(redis_url, prefix=prefix)
    if shared_file is not None:
        return FileChangeChannel(shared_file)
    return InProcessChannel()
