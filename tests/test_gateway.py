"""The life cycle of one process's services: stopping waits for database work already running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from wardgate.config import Settings
from wardgate.gateway import Gateway


def test_stop_waits_for_a_sync_in_progress_before_closing_the_database(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled task abandons its thread; closing the engine under it would leak a connection."""
    gateway = Gateway.build(make_settings(SESSION_SYNC_INTERVAL="0.01"))
    entered, release = threading.Event(), threading.Event()
    order: list[str] = []
    real_sync, real_dispose = gateway.registry.sync, gateway.engine.dispose

    def slow_sync() -> None:
        entered.set()
        release.wait(5)
        real_sync()
        order.append("sync finished")

    def dispose() -> None:
        order.append("engine disposed")
        real_dispose()

    async def scenario() -> None:
        await gateway.start()
        monkeypatch.setattr(gateway.registry, "sync", slow_sync)
        monkeypatch.setattr(gateway.engine, "dispose", dispose)
        assert await asyncio.to_thread(entered.wait, 5)
        stopping = asyncio.create_task(gateway.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done(), "stop() closed the database under a running sync"
        release.set()
        await asyncio.wait_for(stopping, 5)

    asyncio.run(scenario())
    assert order == ["sync finished", "engine disposed"]
