"""Change channels: how one process tells the others "the change log moved, sync now".

Notices carry no data — the database stays the truth and a sync reads it — so a lost, duplicated or
forged notice can only cause an extra sync, never an accepted token. Two implementations:

- `RedisChangeChannel`: Redis pub/sub on `{prefix}:auth:changes`, across instances. While the
  subscription is down the instance cannot know what it missed: `ViewSync` marks its view untrusted
  and every request is checked against the database (fail closed) until the subscription is back
  and a full sync has run.
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

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_PUBLISH_TIMEOUT = 0.5
_RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0)
_WAIT = 0.5  # seconds per read of the subscription
_PING_EVERY = 5.0  # seconds of silence before a ping checks the connection
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


class RedisChangeChannel:
    """Notices through Redis pub/sub on `{prefix}:auth:changes`."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self.name = f"{prefix}:auth:changes"
        self._url = url
        self._publisher = redis.Redis.from_url(
            url, socket_timeout=_PUBLISH_TIMEOUT, socket_connect_timeout=_PUBLISH_TIMEOUT
        )
        self._connected = False
        self._closing = False

    @property
    def connected(self) -> bool:
        """True while subscribed."""
        return self._connected

    def publish(self) -> None:
        """Tell the other instances to sync (best effort: their poll is the safety net)."""
        if self._closing:
            return  # stopping: the others' polls are the safety net for a change made now
        try:
            self._publisher.publish(self.name, b"sync")
        except (RedisError, OSError, ValueError) as exc:  # ValueError: closed under us while stopping
            log.warning(
                "revocation channel: publish failed (%s); other instances rely on their poll",
                type(exc).__name__,
            )

    async def listen(self, on_notice: OnNotice, on_state: OnState) -> None:
        """Subscribe forever, reconnecting with a growing delay; report the subscription's state."""
        attempt = 0
        while not self._closing:
            client = aioredis.Redis.from_url(self._url, socket_connect_timeout=1, health_check_interval=5)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.name)
                    self._connected = True
                    attempt = 0
                    await on_state(True)
                    await self._receive(pubsub, on_notice)
            except (RedisError, OSError) as exc:
                if self._connected:
                    log.error(
                        "revocation channel lost (%s); checking sessions against the database",
                        type(exc).__name__,
                    )
            finally:
                await client.aclose()
            if self._connected:
                self._connected = False
                await on_state(False)
            if not self._closing:
                await asyncio.sleep(_RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)])
            attempt += 1

    async def _receive(self, pubsub: aioredis.client.PubSub, on_notice: OnNotice) -> None:
        # Short waits, and a look at `_closing` after each: redis-py's reads do not reliably give up
        # on a cancellation (seen under uvloop: the task stayed "cancelling" for ever, and with it
        # the process's shutdown), so the loop must also end by itself.
        idle = 0.0
        while not self._closing:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_WAIT)
            if message is not None and message.get("type") == "message":  # not the PONG of a ping
                idle = 0.0
                await on_notice()
                continue
            idle += _WAIT
            if idle >= _PING_EVERY:
                idle = 0.0
                await pubsub.ping()  # detect a dead connection while idle

    def close(self) -> None:
        """Stop listening (within `_WAIT` seconds) and release the publishing connection."""
        self._closing = True
        self._publisher.close()


def channel_from_url(redis_url: str | None, *, prefix: str, shared_file: Path | None = None) -> ChangeChannel:
    """Redis's channel when `REDIS_URL` is set; else the workers' shared file when there are
    several worker processes (`shared_file`); else this process's own."""
    if redis_url:
        return RedisChangeChannel(redis_url, prefix=prefix)
    if shared_file is not None:
        return FileChangeChannel(shared_file)
    return InProcessChannel()
