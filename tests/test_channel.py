"""The change channels, one contract for both (in-process and Redis), and ViewSync's use of them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.scaleout.harness import PrivateRedis
from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.sessions.channel import ChangeChannel, FileChangeChannel, InProcessChannel
from wardgate.sessions.redis_channel import RedisChangeChannel


@pytest.fixture(params=["in-process", "file", pytest.param("redis", marks=pytest.mark.redis)])
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChangeChannel]:
    """Each implementation; the Redis one under a prefix of its own on the shared server."""
    made: ChangeChannel
    if request.param == "in-process":
        made = InProcessChannel()
    elif request.param == "file":
        made = FileChangeChannel(tmp_path / "run" / "changes")
    else:
        assert REDIS_URL  # the `redis` marker skips (or fails, under ./scripts/test) without it
        made = RedisChangeChannel(REDIS_URL, prefix=f"wgtest-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


async def _listening(channel: ChangeChannel) -> tuple[asyncio.Task[None], list[str], asyncio.Event]:
    events: list[str] = []
    notice = asyncio.Event()

    async def on_notice() -> None:
        events.append("notice")
        notice.set()

    async def on_state(connected: bool) -> None:
        events.append(f"connected={connected}")

    task = asyncio.create_task(channel.listen(on_notice, on_state))
    deadline = time.monotonic() + 5
    while "connected=True" not in events:
        assert time.monotonic() < deadline, "the channel never reported a connection"
        await asyncio.sleep(0.01)
    return task, events, notice


class TestChannelContract:
    """What ViewSync relies on, whichever channel it is given."""

    def test_a_notice_published_from_a_worker_thread_reaches_the_listener(
        self, channel: ChangeChannel, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Reads and idle pings every 0.1 s: an answered ping must not count as a notice.
        monkeypatch.setattr("wardgate.sessions.redis_channel._WAIT", 0.1)
        monkeypatch.setattr("wardgate.sessions.redis_channel._PING_EVERY", 0.1)

        async def scenario() -> list[str]:
            task, events, notice = await _listening(channel)
            assert channel.connected
            await asyncio.sleep(0.6)  # several reads and pings: nothing arrives unasked
            assert events == ["connected=True"]
            publisher = threading.Thread(target=channel.publish)  # as a write in a worker thread does
            publisher.start()
            await asyncio.wait_for(notice.wait(), 2)
            await asyncio.to_thread(publisher.join, 2)
            # Stopped as ViewSync stops it: redis-py's reads may swallow a cancellation (seen once in
            # CI: the listener ran on and asyncio.run waited for it until the 120 s timeout).
            channel.close()
            task.cancel()
            await asyncio.wait([task], timeout=2)
            return events

        assert asyncio.run(scenario())[:2] == ["connected=True", "notice"]

    def test_a_publish_with_nobody_listening_is_harmless(self, channel: ChangeChannel) -> None:
        channel.publish()
        channel.publish()


@pytest.mark.slow
def test_a_redis_channel_that_drops_makes_the_view_untrusted_until_caught_up(
    private_redis: PrivateRedis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Fail closed: with its channel down, the view may miss a revocation, so it is not trusted."""
    gateway = Gateway.build(make_settings(REDIS_URL=private_redis.url, SESSION_SYNC_INTERVAL="0.1"))
    registry = gateway.registry

    async def scenario() -> None:
        assert registry.is_stale  # not before the subscription is up and a sync has run
        await gateway.start()
        await _until(lambda: not registry.is_stale)
        private_redis.stop()
        await _until(lambda: registry.is_stale)
        assert gateway.sync.channel_state == "disconnected"
        private_redis.start()
        await _until(lambda: not registry.is_stale, timeout=10)
        assert gateway.sync.channel_state == "connected"
        await gateway.stop()

    asyncio.run(scenario())


def test_without_redis_the_view_is_trusted_and_the_channel_not_configured(
    make_settings: Callable[..., Settings],
) -> None:
    gateway = Gateway.build(make_settings())

    async def scenario() -> None:
        await gateway.start()
        assert not gateway.registry.is_stale
        assert gateway.sync.channel_state == "not configured"
        await gateway.stop()

    asyncio.run(scenario())


def test_a_slow_batched_write_does_not_hold_up_the_views_sync(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Last seen" writes and the view's sync run on loops of their own."""
    gateway = Gateway.build(make_settings(SESSION_SYNC_INTERVAL="0.05"))
    release = threading.Event()
    real_sync = gateway.registry.sync
    syncs: list[float] = []

    def slow_flush(*, due_only: bool = False) -> None:
        release.wait(5)

    def counted_sync() -> int:
        syncs.append(time.monotonic())
        return real_sync()

    async def scenario() -> None:
        await gateway.start()
        monkeypatch.setattr(gateway.registry, "flush_touches", slow_flush)
        monkeypatch.setattr(gateway.registry, "sync", counted_sync)
        await _until(lambda: len(syncs) >= 4, timeout=4)  # while the flush is stuck (5 s)
        assert not gateway.registry.is_stale
        release.set()
        await gateway.stop()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool], *, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
