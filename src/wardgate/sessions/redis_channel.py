"""`RedisChangeChannel`: "sync now" notices through Redis pub/sub, across instances (see `channel`).

While the subscription is down the instance cannot know what it missed: `ViewSync` marks its view
untrusted and every request is checked against the database (fail closed) until the subscription is
back and a full sync has run. A module of its own so that redis-py is imported only when configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
# The callbacks of `channel.ChangeChannel.listen`, spelled out: `channel` imports this module (lazily),
# so this one does not import it back.
OnNotice = Callable[[], Awaitable[None]]
OnState = Callable[[bool], Awaitable[None]]

_PUBLISH_TIMEOUT = 0.5
_RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0)
_WAIT = 0.5  # seconds per read of the subscription
_PING_EVERY = 5.0  # seconds of silence before a ping checks the connection


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
