"""`ViewSync`: keeps this process's revocation view in step with the change log, and says when it is not.

Three background loops, all through `in_thread` so that `stop` waits for the database work they
started (cancelling a task abandons the thread it waits on; the engine must not be disposed of
under it):

- the poll: a sync of the change log every `SESSION_SYNC_INTERVAL` seconds, the safety net that
  needs no other service;
- the channel: a sync at once on each notice (Redis, or this process's hub);
- the batched writes: the `flushers` the composition root hands in (the audit log's refusal counts,
  usage records) every interval, and "last seen" times once a minute, apart from the poll, so that
  a slow write never delays what the view learns; at stop, all of them.

Trust is decided here alone: the view is trusted while the channel is connected and a sync has run
since it (re)connected; otherwise requests are checked against the database (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal, TypeVar

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError

from wardgate.observability import metrics
from wardgate.sessions.channel import ChangeChannel, InProcessChannel
from wardgate.sessions.registry import SessionRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")
STOP_TIMEOUT = 5.0  # seconds each step of a stop may take before it is given up


class ViewSync:
    """The view's synchronisation: poll, channel and batched writes, and whether the view is trusted."""

    def __init__(
        self,
        registry: SessionRegistry,
        channel: ChangeChannel,
        *,
        interval: float,
        flushers: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.registry = registry
        self.channel = channel
        self.interval = interval
        self._flushers = tuple(flushers)
        self._tasks: list[asyncio.Task[None]] = []
        self._in_threads: set[asyncio.Future[object]] = set()
        registry.trusted = channel.connected  # a Redis channel: not before it is subscribed and caught up

    @property
    def channel_state(self) -> Literal["connected", "disconnected", "not configured"]:
        """The change channel as `/health?ready=true` reports it ("not configured": no Redis)."""
        if isinstance(self.channel, InProcessChannel):
            return "not configured"
        return "connected" if self.channel.connected else "disconnected"

    async def start(self) -> None:
        """Start the loops (the view is loaded already)."""
        listen = self.channel.listen(self._on_notice, self._on_state)
        self._tasks = [
            asyncio.create_task(self._poll(), name="wardgate-view-poll"),
            asyncio.create_task(listen, name="wardgate-view-channel"),
            asyncio.create_task(self._flush(), name="wardgate-batched-writes"),
        ]

    async def stop(self) -> None:
        """Stop the loops, wait for their database work, write what is batched; in bounded time."""
        self.channel.close()  # a listener that does not take the cancellation still ends by itself
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            for task in stuck:
                log.error("%s did not stop within %.0f s; left behind", task.get_name(), STOP_TIMEOUT)
        self._tasks.clear()
        if self._in_threads:
            await asyncio.wait(self._in_threads, timeout=STOP_TIMEOUT)
        try:
            await asyncio.wait_for(anyio.to_thread.run_sync(self._flush_all, True), STOP_TIMEOUT)
        except (SQLAlchemyError, TimeoutError) as exc:
            log.warning("last batched writes not written at stop (%s)", type(exc).__name__)

    def _flush_all(self, final: bool = False) -> None:
        """Every batched write: "last seen" times when due (all of them at the end), then the others."""
        failure: SQLAlchemyError | None = None
        touches: Callable[[], None] = partial(self.registry.flush_touches, due_only=not final)
        for flush in (touches, *self._flushers):
            try:
                flush()
            except SQLAlchemyError as exc:  # the others are still written
                failure = exc
            except Exception:  # a bug in one batched write: logged; the others are still written
                log.exception("a batched write failed")
        if failure is not None:
            raise failure

    async def in_thread(self, work: Callable[[], T]) -> T:
        """Run database work in a worker thread that `stop` waits for."""
        future: asyncio.Future[T] = asyncio.ensure_future(anyio.to_thread.run_sync(work))
        self._in_threads.add(future)  # type: ignore[arg-type]  # awaited whatever it returns
        future.add_done_callback(self._in_threads.discard)
        return await asyncio.shield(future)

    async def _on_notice(self) -> None:
        try:
            await self.in_thread(self.registry.sync)
        except SQLAlchemyError as exc:  # the poll retries; the view ages into the database fallback
            log.warning("session sync on notice failed (%s)", type(exc).__name__)
        self._observe_age()

    def _observe_age(self) -> None:
        metrics.observe_view_sync(time.monotonic() - self.registry.view.synced_at)

    async def _on_state(self, connected: bool) -> None:
        if not connected:
            self.registry.trusted = False
            return
        try:
            # Catch up on whatever was missed while disconnected, then trust the view again.
            await self.in_thread(self.registry.sync)
        except SQLAlchemyError as exc:
            log.warning(
                "session sync after reconnecting failed (%s); view stays untrusted", type(exc).__name__
            )
            return
        if self.channel_state == "connected":
            log.info("revocation channel connected")
        self.registry.trusted = True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.in_thread(self.registry.sync)
            except SQLAlchemyError as exc:
                # Fail closed: the view's age grows and requests fall back to the database.
                log.warning("session sync failed (%s); checks fall back to the database", type(exc).__name__)
                continue
            finally:
                self._observe_age()
            if self.channel.connected:
                self.registry.trusted = True  # receiving notices, and caught up

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.in_thread(self._flush_all)
            except SQLAlchemyError as exc:
                log.warning("batched writes failed (%s); retried at the next interval", type(exc).__name__)
            except Exception:  # a bug in one write must not end every batched write for good
                log.exception("batched writes failed; retried at the next interval")
