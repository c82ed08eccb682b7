"""Retention: old rows deleted in bounded batches by a periodic job that every instance runs.

Deleting by a time condition is idempotent, so instances sharing a database may prune at the same
moment: each batch is its own short transaction, and whichever instance deletes a row first wins.
One run deletes at most `BATCH * MAX_BATCHES` rows per job; the next run continues, so a backlog
(a year of history on first upgrade) drains without a long lock or a long stop: while a job still
deletes a batch's worth or more, the next run comes after `BACKLOG_INTERVAL` rather than the hour.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import delete, inspect, select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

log = logging.getLogger(__name__)
BATCH = 2_000
MAX_BATCHES = 100
INTERVAL = 3600.0  # seconds between runs (each instance, with jitter)
FIRST_RUN_AFTER = 5.0  # seconds after start (plus jitter): a restart also drains a backlog
BACKLOG_INTERVAL = 60.0  # seconds between runs while a job still has a backlog
STOP_TIMEOUT = 5.0


def prune_before(
    sessions: sessionmaker[Session],
    column: InstrumentedAttribute[int] | InstrumentedAttribute[int | None],
    cutoff: int,
    *,
    stopping: threading.Event | None = None,
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES,
) -> int:
    """Delete the rows whose `column` (of a mapped table) is below `cutoff` (NULL never is), `batch`
    rows per transaction, at most `max_batches` batches; return how many were deleted.

    It goes on until a batch finds nothing: a short batch may only mean that another instance
    deleted some of the same rows at the same moment, not that none are left."""
    model = column.class_
    keys = inspect(model).primary_key
    key = keys[0] if len(keys) == 1 else tuple_(*keys)  # a composite key: compared as a row value
    total = 0
    for _ in range(max_batches):
        if stopping is not None and stopping.is_set():
            break
        chosen = select(*keys).where(column < cutoff).limit(batch)
        with sessions() as db, db.begin():
            deleted = int(db.execute(delete(model).where(key.in_(chosen))).rowcount)  # type: ignore[attr-defined]
        total += deleted
        if deleted == 0:
            break
    return total


@dataclass(frozen=True, slots=True)
class Job:
    """A named pruning step: given the time now and a stop signal, delete and return the count."""

    name: str
    run: Callable[[int, threading.Event], int]


class Housekeeper:
    """Runs the pruning jobs in a worker thread: soon after start, then every `interval` seconds."""

    def __init__(self, jobs: Sequence[Job], *, interval: float = INTERVAL) -> None:
        self.jobs = tuple(jobs)
        self.interval = interval
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[dict[str, int]] | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # a test's clock may stand in

    def run_once(self, now: int | None = None) -> dict[str, int]:
        """Every job once (a failing job is logged, the others still run); rows deleted per job."""
        at = now if now is not None else int(time.time())
        deleted: dict[str, int] = {}
        for job in self.jobs:
            try:
                deleted[job.name] = job.run(at, self._stopping)
            except SQLAlchemyError as exc:
                log.warning("pruning %s failed (%s); retried at the next run", job.name, type(exc).__name__)
        pruned = {name: count for name, count in deleted.items() if count}
        if pruned:
            log.info("pruned %s", ", ".join(f"{count} {name}" for name, count in pruned.items()))
        return deleted

    async def start(self) -> None:
        """Start the periodic runs."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="wardgate-housekeeping")

    async def stop(self) -> None:
        """Stop: a run in progress ends after its current batch; in bounded time."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_TIMEOUT)
            self._task = None
        if self._running is not None:
            await asyncio.wait([self._running], timeout=STOP_TIMEOUT)

    async def _loop(self) -> None:
        delay = FIRST_RUN_AFTER * (1 + random.random())  # noqa: S311 - spreading instances, not a secret
        while True:
            await self._sleep(delay)
            self._running = asyncio.ensure_future(anyio.to_thread.run_sync(self.run_once))
            backlog = False
            try:
                deleted = await asyncio.shield(self._running)
                backlog = any(count >= BATCH for count in deleted.values())  # maybe more: look again soon
            except Exception:  # a bug in a job must not end pruning for the life of the process
                log.exception("pruning failed; retried at the next run")
            interval = BACKLOG_INTERVAL if backlog else self.interval
            delay = interval * random.uniform(0.9, 1.1)  # noqa: S311
