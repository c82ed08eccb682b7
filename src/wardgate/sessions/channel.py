"""The revocation channel: Redis pub/sub tells every instance "the change log moved, sync now".

Messages carry no data — the database stays the truth and a sync reads it — so a lost, duplicated
or forged message can only cause an extra sync, never an accepted token. While the subscription is
down, the instance cannot know what it missed: its view is marked untrusted and every request is
checked against the database (fail closed) until the subscription is back and a full sync has run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
_PUBLISH_TIMEOUT = 0.5
_RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0)


class RedisChangeChannel:
    """Publish and receive "sync now" notices on `{prefix}:auth:changes`."""

    def __init__(self, url: str, *, prefix: str) -> None:
        self.name = f"{prefix}:auth:changes"
        self._url = url
        self._publisher = redis.Redis.from_url(
            url, socket_timeout=_PUBLISH_TIMEOUT, socket_connect_timeout=_PUBLISH_TIMEOUT
        )
        self.connected = False

    def publish(self) -> None:
        """Tell the other instances to sync (best effort: their poll is the safety net)."""
        try:
            self._publisher.publish(self.name, b"sync")
        except RedisError as exc:
            log.warning(
                "revocation channel: publish failed (%s); other instances rely on their poll",
                type(exc).__name__,
            )

    async def listen(
        self, on_notice: Callable[[], Awaitable[None]], on_state: Callable[[bool], Awaitable[None]]
    ) -> None:
        """Subscribe forever; call `on_state(True/False)` as the subscription comes and goes."""
        attempt = 0
        while True:
            client = aioredis.Redis.from_url(self._url, socket_connect_timeout=1, health_check_interval=5)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self.name)
                    self.connected = True
                    attempt = 0
                    await on_state(True)
                    await self._receive(pubsub, on_notice)
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.error(
                        "revocation channel lost (%s); checking sessions against the database",
                        type(exc).__name__,
                    )
            finally:
                await client.aclose()
            if self.connected:
                self.connected = False
                await on_state(False)
            await asyncio.sleep(_RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)])
            attempt += 1

    @staticmethod
    async def _receive(pubsub: aioredis.client.PubSub, on_notice: Callable[[], Awaitable[None]]) -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if message is not None:
                await on_notice()
            else:
                await pubsub.ping()  # detect a dead connection while idle

    def close(self) -> None:
        """Release the publishing connection."""
        self._publisher.close()
