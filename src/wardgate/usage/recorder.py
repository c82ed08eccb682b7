"""Usage records, written the way "last seen" times are: collected in memory, flushed in bulk.

A proxied call appends one `CallRecord` (no I/O on the request's path); the view's batched-writes
loop (`ViewSync`) flushes them every `SESSION_SYNC_INTERVAL` in one INSERT per 1,000 rows, and a
clean stop flushes what is left. What a crash loses is at most one interval of records (the budget
counters, written at each call, are not affected). At most `MAX_PENDING` records wait; past that
(the database down for long under heavy traffic) further records are counted, logged and dropped
rather than let memory grow without bound. Prompts and completions are never part of a record.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass

from sqlalchemy import insert
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.observability.metrics import count_tokens
from wardgate.storage.models import UsageRecord
from wardgate.storage.retention import prune_before

log = logging.getLogger(__name__)
MAX_PENDING = 100_000
CHUNK = 1_000


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call, as it is stored (`usage_records`)."""

    at: int
    user_id: str
    api_key_id: str | None
    upstream: str
    endpoint: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    reasoning_tokens: int | None
    duration_ms: int
    ttfb_ms: int | None
    status: int
    streamed: bool
    complete: bool
    metered: bool
    chat_id: str | None = None


class UsageRecorder:
    """Collects call records and writes them in bulk."""

    def __init__(
        self, sessions: sessionmaker[Session], *, retention_days: int, measured: bool = True
    ) -> None:
        self._sessions = sessions
        self.retention_days = retention_days
        self._measured = measured  # False: nobody may read the metrics, so tokens are not counted there
        self._pending: list[CallRecord] = []
        self._dropped = 0
        self._lock = threading.Lock()  # appends come from the event loop, flushes from a worker thread

    def add(self, record: CallRecord) -> None:
        """Queue one call's record (no I/O), and count the tokens it used (`/metrics`)."""
        if record.metered and self._measured:
            count_tokens(record.upstream, record.model, record.prompt_tokens, record.completion_tokens)
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self._dropped += 1
                return
            self._pending.append(record)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Write what is pending; on failure it is kept for the next flush (within the bound)."""
        with self._lock:
            batch, self._pending = self._pending, []
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.error("%d usage records dropped: more than %d waited to be written", dropped, MAX_PENDING)
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            try:
                self._insert(chunk)
            except OperationalError:  # the database is down: kept, oldest first, for the next flush
                self._keep(batch[start:])
                raise
            except SQLAlchemyError:  # a row the database refuses: write the others, drop that one
                self._insert_one_by_one(chunk)

    def _insert(self, records: list[CallRecord]) -> None:
        with self._sessions() as db, db.begin():
            db.execute(insert(UsageRecord), [asdict(record) for record in records])

    def _insert_one_by_one(self, records: list[CallRecord]) -> None:
        refused = 0
        for record in records:
            try:
                self._insert([record])
            except OperationalError:
                self._keep([record])
            except SQLAlchemyError:
                refused += 1
        if refused:
            log.error("%d usage records refused by the database and dropped", refused)

    def _keep(self, records: list[CallRecord]) -> None:
        with self._lock:
            kept = records + self._pending
            self._dropped += max(0, len(kept) - MAX_PENDING)
            self._pending = kept[:MAX_PENDING]

    def prune(self, now: int, stopping: threading.Event) -> int:
        """Delete records older than the retention (a housekeeping job)."""
        return prune_before(
            self._sessions, UsageRecord.at, now - self.retention_days * 86400, stopping=stopping
        )
