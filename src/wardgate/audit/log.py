"""The audit log: security events in the database and, the same, as JSON log lines.

An event records time, event name, outcome, actor, subject, client IP, user agent and a short
detail. Callers pass identities and reasons only — never a password, token or secret — and every
field is cut to a short length so nothing large or sensitive can be smuggled in.

Anonymous traffic must not be able to fill the database through this log:
- a subject is stored only when the caller vouches for it (a validated address, a known account);
- rate-limited refusals are recorded once per limit bucket and window, as one row whose `count`
  says how many refusals it stands for (instances sharing the database add to the same row);
- rows older than `AUDIT_RETENTION_DAYS` are pruned (`prune`, run by the housekeeping task).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace

from sqlalchemy import ColumnElement, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import ApiError, NotFoundError, RateLimitedError
from wardgate.storage.models import AuditEvent
from wardgate.storage.paging import Order, Page, fetch_page
from wardgate.storage.retention import prune_before

log = logging.getLogger("wardgate.audit")
_DEFAULT_WINDOW = 60  # seconds: refusals that name no window of their own are grouped per minute
_MAX_WINDOWS = 10_000  # refusal windows one process counts in memory at most

# Where the current request comes from (client IP, user agent), set once per request by the HTTP
# layer; worker threads started with anyio inherit it, so services need not pass it around.
request_origin: ContextVar[tuple[str | None, str | None]] = ContextVar("request_origin", default=(None, None))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event as it is stored and logged."""

    at: int
    event: str
    outcome: str
    actor: str | None = None
    subject: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    detail: str | None = None
    count: int = 1  # how many refusals the row stands for (rate-limited ones are grouped)

    def bounded(self) -> AuditRecord:
        """This record with every text field cut to its limit (empty ones as None)."""
        return replace(
            self,
            event=self.event[:64],
            actor=_cut(self.actor, 320),
            subject=_cut(self.subject, 320),
            ip=_cut(self.ip, 64),
            user_agent=_cut(self.user_agent, 256),
            detail=_cut(self.detail, 200),
        )


@dataclass(slots=True)
class Entry:
    """The event an `attempt` will record; the caller may name the subject once it is known, or say
    how to find it (`resolve`, called only if a refusal's row is stored)."""

    subject: str | None = None
    resolve: Callable[[], str | None] | None = None
    happened: bool = True  # False: nothing changed (a session already ended), so no row is written


@dataclass(slots=True)
class _Window:
    """A refusal row of one bucket and window: refusals counted since the last flush."""

    ends_at: int
    pending: int = 0


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the log; None means "any"."""

    event: str | None = None
    outcome: str | None = None
    actor: str | None = None
    subject: str | None = None
    since: int | None = None
    until: int | None = None


class AuditLog:
    """Write and read security events."""

    def __init__(self, sessions: sessionmaker[Session], *, retention_days: int = 90) -> None:
        self._sessions = sessions
        self.retention_days = retention_days
        self._windows: dict[str, _Window] = {}  # refusal rows this process stored or found, by window
        self._lock = threading.Lock()

    def record(
        self,
        event: str,
        outcome: str,
        *,
        actor: str | None = None,
        subject: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Store and log one event. A database failure is logged, never raised: auditing must not
        turn a refused sign-in into a server error (the JSON line is still written)."""
        record = self._record(event, outcome, actor, subject, ip, user_agent, detail)
        _log(record)
        try:
            with self._sessions() as db, db.begin():
                db.add(AuditEvent(**asdict(record)))
        except SQLAlchemyError as exc:
            log.error("audit: could not store %s (%s)", event, type(exc).__name__)

    def refused(
        self,
        event: str,
        exc: ApiError,
        *,
        actor: str | None = None,
        subject: str | None = None,
        resolve: Callable[[], str | None] | None = None,
    ) -> None:
        """A rate-limited (429) or busy (503) refusal of `event`, or any refusal anyone can repeat at
        will (a forged SSO callback): one row per limit bucket (else code, event and address) and
        window.

        The first refusal of a window in this process stores the row (or finds the one another
        instance stored) and writes its JSON line; the others are counted in memory and added to the
        row's `count` by `flush`, so a flood costs no database write per request. `resolve` names
        the subject, called only when a row is stored.
        """
        tripped = exc.status_code == 429
        name, detail = ("ratelimit.tripped", event) if tripped else (event, exc.code)
        record = self._record(name, "refused", actor, subject, None, None, detail)
        limited = exc if isinstance(exc, RateLimitedError) else None
        window = (limited.window if limited else None) or _DEFAULT_WINDOW
        bucket = (limited.bucket if limited else None) or f"{exc.code}:{event}:{record.ip}"
        window_key = hashlib.sha256(f"{bucket}|{window}|{record.at // window}".encode()).hexdigest()
        with self._lock:
            counted = self._windows.get(window_key)
            if counted is not None:
                counted.pending += 1
                return
            if len(self._windows) >= _MAX_WINDOWS:  # bounded: beyond it, straight to the database
                self._add_to_window(window_key, 1)
                return
            self._windows[window_key] = _Window(ends_at=(record.at // window + 1) * window)
        if record.subject is None and resolve is not None:
            record = replace(record, subject=resolve()).bounded()
        try:
            with self._sessions() as db, db.begin():
                db.add(AuditEvent(**asdict(record), window_key=window_key))
        except IntegrityError:  # another instance stored the window's row first: add to it
            with self._lock:
                self._windows[window_key].pending += 1
            return
        except SQLAlchemyError as exc_db:
            log.error("audit: could not store %s (%s)", name, type(exc_db).__name__)
            with self._lock:
                self._windows.pop(window_key, None)  # the next refusal tries again
        _log(record)

    def flush(self) -> None:
        """Add the refusals counted in memory to their rows (called every few seconds and at stop);
        forget windows that have ended and are written."""
        now = int(time.time())
        with self._lock:
            pending = {key: w.pending for key, w in self._windows.items() if w.pending}
            for key in pending:
                self._windows[key].pending = 0
        try:
            for key, count in sorted(pending.items()):
                self._add_to_window(key, count)
        except SQLAlchemyError as exc:
            log.warning(
                "audit: refusal counts not written (%s); retried at the next flush", type(exc).__name__
            )
            with self._lock:
                for key, count in pending.items():
                    if key in self._windows:
                        self._windows[key].pending += count
            return
        with self._lock:
            ended = [key for key, w in self._windows.items() if w.ends_at < now and not w.pending]
            for key in ended:
                del self._windows[key]

    def _add_to_window(self, window_key: str, count: int) -> None:
        with self._sessions() as db, db.begin():
            db.execute(
                update(AuditEvent)
                .where(AuditEvent.window_key == window_key)
                .values(count=AuditEvent.count + count)
            )

    @staticmethod
    def _record(
        event: str,
        outcome: str,
        actor: str | None,
        subject: str | None,
        ip: str | None,
        user_agent: str | None,
        detail: str | None,
    ) -> AuditRecord:
        origin_ip, origin_agent = request_origin.get()
        at = int(time.time())
        return AuditRecord(
            at, event, outcome, actor, subject, ip or origin_ip, user_agent or origin_agent, detail
        ).bounded()

    @contextmanager
    def attempt(
        self, event: str, *, actor: str | None = None, subject: str | None = None, detail: str | None = None
    ) -> Iterator[Entry]:
        """Record `event` as success, or as refused/failure with the error's code, and re-raise.

        `subject` must be one the caller vouches for (a validated address or a known account); the
        yielded `Entry` lets the caller name it once it has been looked up.
        """
        entry = Entry(subject)
        try:
            yield entry
        except RateLimitedError as exc:
            self.refused(event, exc, actor=actor, subject=entry.subject, resolve=entry.resolve)
            raise
        except NotFoundError:
            # Nothing there, nothing changed or shown: a row per made-up id would let a signed-in
            # person fill the table with `DELETE /sessions/<anything>` (found by review).
            raise
        except ApiError as exc:
            self.record(event, "failure", actor=actor, subject=entry.subject, detail=exc.code)
            raise
        if entry.happened:
            self.record(event, "success", actor=actor, subject=entry.subject, detail=detail)

    def prune(self, *, now: int | None = None, stopping: threading.Event | None = None) -> int:
        """Delete events older than the retention, in bounded batches; return how many."""
        cutoff = (now if now is not None else int(time.time())) - self.retention_days * 86400
        return prune_before(self._sessions, AuditEvent.at, cutoff, stopping=stopping)

    def query(
        self, filters: AuditQuery, *, cursor: str | None = None, offset: int = 0, limit: int = 50
    ) -> Page[AuditRecord]:
        """A page of events, newest first (after `cursor`, or from `offset`), and how many match
        (up to `COUNT_CAP`). Each filter has an index that ends in (at, id): migration 0009."""
        conditions: list[ColumnElement[bool]] = []
        for column, value in (
            (AuditEvent.event, filters.event),
            (AuditEvent.outcome, filters.outcome),
            (AuditEvent.actor, filters.actor),
            (AuditEvent.subject, filters.subject),
        ):
            if value is not None:
                conditions.append(column == value)
        if filters.since is not None:
            conditions.append(AuditEvent.at >= filters.since)
        if filters.until is not None:
            conditions.append(AuditEvent.at <= filters.until)
        with self._sessions() as db:
            found = fetch_page(
                db, AuditEvent, conditions, _NEWEST_FIRST, cursor=cursor, offset=offset, limit=limit
            )
        return Page([_record(row) for row in found.rows], found.total, found.next_cursor)


_NEWEST_FIRST = Order(AuditEvent.at, AuditEvent.id)


def _cut(value: str | None, size: int) -> str | None:
    return value[:size] or None if value else None


def _log(record: AuditRecord) -> None:
    log.info(json.dumps({"audit": asdict(record)}, separators=(",", ":")))


def _record(row: AuditEvent) -> AuditRecord:
    return AuditRecord(
        row.at,
        row.event,
        row.outcome,
        row.actor,
        row.subject,
        row.ip,
        row.user_agent,
        row.detail,
        row.count,
    )
