"""The audit log's bounds, against SQLite and a real PostgreSQL: a flood of refusals is one row per
bucket and window (also when instances share the database), every field has a size, old events are
pruned in bounded batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from wardgate.audit.log import AuditLog, AuditQuery, request_origin
from wardgate.errors import BadRequestError, BusyError, RateLimitedError
from wardgate.storage import db, schema
from wardgate.storage.models import AuditEvent
from wardgate.storage.retention import prune_before


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.create_db_engine(database_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def _rows(engine: Engine) -> list[AuditEvent]:
    with db.session_factory(engine)() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _limited(bucket: str, window: int = 60) -> RateLimitedError:
    return RateLimitedError("Too many attempts.", retry_after=30, bucket=bucket, window=window)


def _refuse(audit: AuditLog, exc: RateLimitedError, subject: str | None = None) -> None:
    with pytest.raises(RateLimitedError), audit.attempt("auth.signin", subject=subject):
        raise exc


def test_refusals_of_one_bucket_and_window_are_one_row_with_a_count(engine: Engine) -> None:
    audit = AuditLog(db.session_factory(engine))
    for _ in range(500):
        _refuse(audit, _limited("signin-ip:198.51.100.7"))
    _refuse(audit, _limited("signin-ip:203.0.113.9"))  # another client: its own row
    assert [r.count for r in _rows(engine)] == [1, 1]  # counted in memory: no write per refusal ...
    audit.flush()  # ... until the batched write (every SESSION_SYNC_INTERVAL, and at stop)
    rows = _rows(engine)
    assert [(r.event, r.outcome, r.detail, r.count) for r in rows] == [
        ("ratelimit.tripped", "refused", "auth.signin", 500),
        ("ratelimit.tripped", "refused", "auth.signin", 1),
    ]
    found = audit.query(AuditQuery(event="ratelimit.tripped"))
    events, total = found.rows, found.total
    assert total == 2 and sorted(e.count for e in events) == [1, 500]


def test_a_new_window_starts_a_new_row(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    audit = AuditLog(db.session_factory(engine))
    start = 1_800_000_000  # a multiple of 60: the window's first second
    for offset in (0, 59, 60, 61):
        monkeypatch.setattr(time, "time", lambda offset=offset: start + offset)
        _refuse(audit, _limited("signup:198.51.100.7"))
        audit.flush()
    assert [(r.at, r.count) for r in _rows(engine)] == [(start, 2), (start + 60, 2)]
    assert len(audit._windows) == 1  # the ended window, written, is forgotten


def test_busy_refusals_are_grouped_per_client_and_minute(engine: Engine) -> None:
    audit = AuditLog(db.session_factory(engine))
    token = request_origin.set(("198.51.100.7", "curl"))
    try:
        for _ in range(20):
            _refuse(audit, BusyError("Busy.", retry_after=2))
    finally:
        request_origin.reset(token)
    audit.flush()
    assert [(r.event, r.outcome, r.detail, r.count) for r in _rows(engine)] == [
        ("auth.signin", "refused", "busy", 20)
    ]


def test_instances_sharing_the_database_add_to_one_row(engine: Engine) -> None:
    """Two instances refusing the same bucket at once: one row, every refusal counted."""
    logs = [AuditLog(db.session_factory(engine)), AuditLog(db.session_factory(engine))]
    start = threading.Barrier(8)

    def flood(n: int) -> None:
        start.wait()
        for _ in range(25):
            _refuse(logs[n % 2], _limited("signin:ada@example.com:198.51.100.7", window=3600))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(flood, range(8)))
    for log in logs:
        log.flush()
    rows = _rows(engine)
    assert [(r.event, r.count) for r in rows] == [("ratelimit.tripped", 200)]


def test_every_field_is_cut_to_its_size(engine: Engine) -> None:
    audit = AuditLog(db.session_factory(engine))
    token = request_origin.set(("2001:db8::1", "A" * 5000))
    try:
        with (
            pytest.raises(BadRequestError),
            audit.attempt("auth.signup", actor="x" * 5000, subject="y" * 5000),
        ):
            raise BadRequestError("no", code="c" * 5000)
    finally:
        request_origin.reset(token)
    (row,) = _rows(engine)
    assert (
        len(row.actor or ""),
        len(row.subject or ""),
        len(row.user_agent or ""),
        len(row.detail or ""),
    ) == (
        320,
        320,
        256,
        200,
    )


def test_pruning_deletes_only_what_is_older_than_the_retention(engine: Engine) -> None:
    sessions = db.session_factory(engine)
    audit = AuditLog(sessions, retention_days=90)
    now = int(time.time())
    with sessions() as session, session.begin():
        for age_days in (400, 91, 89, 0):
            session.add(AuditEvent(at=now - age_days * 86400, event="auth.signin", outcome="success"))
    assert audit.prune(now=now) == 2
    assert sorted((now - r.at) // 86400 for r in _rows(engine)) == [0, 89]


def test_pruning_goes_in_bounded_batches_and_stops_when_asked(engine: Engine) -> None:
    sessions = db.session_factory(engine)
    with sessions() as session, session.begin():
        session.add_all(AuditEvent(at=i, event="old", outcome="success") for i in range(1, 251))
    stopping = threading.Event()
    assert prune_before(sessions, AuditEvent.at, 10_000, batch=100, max_batches=2) == 200  # one run's share
    stopping.set()
    assert prune_before(sessions, AuditEvent.at, 10_000, batch=100, stopping=stopping) == 0
    assert prune_before(sessions, AuditEvent.at, 10_000, batch=100) == 50  # the next run continues
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_the_subject_of_a_refusal_is_looked_up_once_per_window(engine: Engine) -> None:
    audit = AuditLog(db.session_factory(engine))
    lookups = []

    def resolve() -> str:
        lookups.append(1)
        return "ada@example.com"

    def refuse() -> None:
        with audit.attempt("auth.signin") as entry:
            entry.resolve = resolve
            raise _limited("signin:ada@example.com:198.51.100.7")

    for _ in range(50):
        with pytest.raises(RateLimitedError):
            refuse()
    audit.flush()
    assert len(lookups) == 1
    assert [(r.subject, r.count) for r in _rows(engine)] == [("ada@example.com", 50)]


def test_counts_not_written_when_the_database_fails_are_written_later(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = AuditLog(db.session_factory(engine))
    for _ in range(3):
        _refuse(audit, _limited("signin-ip:198.51.100.7"))
    real = audit._add_to_window

    def down(window_key: str, count: int) -> None:
        raise OperationalError("UPDATE", {}, Exception("database is locked"))

    monkeypatch.setattr(audit, "_add_to_window", down)
    audit.flush()  # logged, kept
    monkeypatch.setattr(audit, "_add_to_window", real)
    audit.flush()
    assert [r.count for r in _rows(engine)] == [3]
