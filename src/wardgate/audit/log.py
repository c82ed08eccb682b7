"""The audit log: security events in the database and, the same, as JSON log lines.

An event records time, event name, outcome, actor, subject, client IP, user agent and a short
detail. Callers pass identities and reasons only — never a password, token or secret — and details
are cut to a short length so nothing large or sensitive can be smuggled in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import ApiError, RateLimitedError
from wardgate.storage.models import AuditEvent

log = logging.getLogger("wardgate.audit")
_DETAIL_MAX = 200

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

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

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
        origin_ip, origin_agent = request_origin.get()
        record = AuditRecord(
            int(time.time()),
            event,
            outcome,
            actor,
            subject,
            ip or origin_ip,
            (user_agent or origin_agent or "")[:512] or None,
            (detail or "")[:_DETAIL_MAX] or None,
        )
        log.info(json.dumps({"audit": asdict(record)}, separators=(",", ":")))
        try:
            with self._sessions() as db, db.begin():
                db.add(AuditEvent(**asdict(record)))
        except SQLAlchemyError as exc:
            log.error("audit: could not store %s (%s)", event, type(exc).__name__)

    @contextmanager
    def attempt(
        self, event: str, *, actor: str | None = None, subject: str | None = None, detail: str | None = None
    ) -> Iterator[None]:
        """Record `event` as success, or as refused/failure with the error's code, and re-raise."""
        try:
            yield
        except ApiError as exc:
            outcome = "refused" if isinstance(exc, RateLimitedError) else "failure"
            self.record(event, outcome, actor=actor, subject=subject, detail=exc.code)
            if isinstance(exc, RateLimitedError) and exc.status_code == 429:
                self.record("ratelimit.tripped", "refused", actor=actor, subject=subject, detail=event)
            raise
        self.record(event, "success", actor=actor, subject=subject, detail=detail)

    def query(
        self, filters: AuditQuery, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[AuditRecord], int]:
        """A page of events, newest first, and the total number matching."""
        conditions = []
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
            total = db.scalar(select(func.count()).select_from(AuditEvent).where(*conditions)) or 0
            rows = db.scalars(
                select(AuditEvent)
                .where(*conditions)
                .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [_record(row) for row in rows], total


def _record(row: AuditEvent) -> AuditRecord:
    return AuditRecord(
        row.at, row.event, row.outcome, row.actor, row.subject, row.ip, row.user_agent, row.detail
    )
