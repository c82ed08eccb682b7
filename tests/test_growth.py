"""Flat as it grows: bulk background writes, a bounded start, pruning, and lists that walk an index.

Each test is the failure found at scale, tried small: the statement count of a flush, what start-up
reads, the query plan of every list a person waits for (on SQLite and PostgreSQL, after ANALYZE on a
few thousand rows, so each planner picks what it would pick at a million), and paging that visits
every row once however many share a timestamp.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func, insert, select, text
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, bearer, refused, signup
from wardgate.audit.log import AuditQuery
from wardgate.config import Settings
from wardgate.config.values import Role
from wardgate.errors import BadRequestError
from wardgate.gateway import Gateway
from wardgate.http.application import build_application
from wardgate.sessions import registry as registry_module
from wardgate.sessions.records import UserState
from wardgate.sessions.view import SessionView
from wardgate.storage import retention, schema
from wardgate.storage.models import AuditEvent, AuthChange, AuthSession, User
from wardgate.storage.paging import MAX_OFFSET, Cursor
from wardgate.storage.retention import prune_before

Site = tuple[TestClient, Gateway, dict[str, Any]]
USERS = "/api/v1/users/"
AUDIT = "/api/v1/audit"
SESSIONS = "/api/v1/auths/sessions"
NOW = int(time.time())


@pytest.fixture
def gateway(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Gateway]:
    """Services on the database under test, migrated and loaded (no HTTP, no background loops)."""
    gw = Gateway.build(make_settings(DATABASE_URL=database_url, DEFAULT_USER_ROLE="user"))
    schema.upgrade(gw.engine)
    gw.registry.load()
    yield gw
    gw.engine.dispose()


@pytest.fixture
def site(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Site]:
    """A running instance on the database under test, its services, and its admin (signed up first)."""
    settings = make_settings(DATABASE_URL=database_url, DEFAULT_USER_ROLE="user", SIGNUP_RATE_LIMIT="100/1h")
    gw = Gateway.build(settings)
    with TestClient(build_application(gw), headers={"origin": ORIGIN}) as client:
        yield client, gw, signup(client, "admin@example.com", name="Admin")


def add_users(
    engine: Engine, count: int, *, role: str = "user", at: int = NOW - 86400, tag: str = "u"
) -> list[str]:
    """`count` accounts inserted in one statement (no password), all created at the same second."""
    rows = [
        {
            "id": str(uuid.uuid4()),
            "email": f"{tag}{i:06d}@example.com",
            "name": f"{tag.title()} {i:06d}",
            "role": role,
            "active": True,
            "session_stamp": "s",
            "profile_image_url": "/user.png",
            "created_at": at,
            "updated_at": at,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(User), rows)
    return [row["id"] for row in rows]


def add_sessions(
    engine: Engine,
    user_ids: list[str],
    per_user: int,
    *,
    revoked: bool = False,
    expires_at: int | None = NOW + 3600,
) -> list[str]:
    """Sessions for each user, `per_user` of them, created in pairs at the same second (ties)."""
    rows = [
        {
            "id": str(uuid.uuid4()),
            "user_id": user_id,
            "auth_method": "password",
            "created_at": NOW - 1000 + n // 2,
            "expires_at": expires_at,
            "last_seen_at": NOW - 1000,
            "revoked_at": NOW - 10 if revoked else None,
        }
        for user_id in user_ids
        for n in range(per_user)
    ]
    with engine.begin() as conn:
        conn.execute(insert(AuthSession), rows)
    return [row["id"] for row in rows]


def add_events(engine: Engine, count: int, *, actors: int = 100) -> None:
    rows = [
        {
            "at": NOW - 86400 + i // 3,  # three to a second: ties
            "event": "user.deleted"
            if i % 500 == 7
            else ("auth.signin", "auth.signout", "user.updated")[i % 3],
            "outcome": "refused" if i % 400 == 7 else ("success", "failure")[i % 2],
            "actor": f"a{i % actors}@example.com",
            "subject": f"s{i % (actors * 2)}@example.com",
            "count": 1,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(AuditEvent), rows)


class Statements:
    """Every statement the engine sends while active, and how many rows each carried."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sent: list[tuple[str, Any, int]] = []

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(
        self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        self.sent.append((statement, parameters, len(parameters) if many else 1))

    def plans(self) -> str:
        """The query plans of the SELECTs sent (PostgreSQL: with sequential scans priced out, so
        that one shows up only where no index can serve)."""
        found = []
        with self.engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters, _ in self.sent:
                if not statement.lstrip().upper().startswith("SELECT") or "count(*)" in statement:
                    continue  # a count stops at paging.COUNT_CAP rows: bounded whatever its plan
                prefix = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
                rows = conn.exec_driver_sql(prefix + statement, parameters).all()
                found.append("\n".join(str(row[0] if postgres else row[3]) for row in rows))
        return "\n".join(found)


def analyze(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


# --- background writes -------------------------------------------------------------------------


def test_a_flush_of_thousands_of_sessions_is_a_few_statements(gateway: Gateway) -> None:
    """Found at 4,000 sessions in one interval: one UPDATE each, 4-17 s per flush."""
    users = add_users(gateway.engine, 1500)
    sessions = add_sessions(gateway.engine, users, 2)
    for index, session_id in enumerate(sessions):
        gateway.registry.touch(session_id, users[index // 2], "10.0.0.9")
    with Statements(gateway.engine) as sent:
        gateway.registry.flush_touches()
    updates = [(s, rows) for s, _, rows in sent.sent if s.lstrip().upper().startswith("UPDATE")]
    assert sum(rows for _, rows in updates) == len(users) + len(sessions)  # every row written...
    assert len(updates) <= 6  # ...in a statement per table and chunk of a thousand
    with gateway.engine.connect() as conn:
        seen = conn.execute(select(AuthSession.ip).where(AuthSession.id.in_(sessions[:50]))).scalars().all()
        active = conn.execute(select(User.last_active_at).where(User.id.in_(users[:50]))).scalars().all()
    assert set(seen) == {"10.0.0.9"} and None not in active


def test_pending_last_seen_times_are_bounded(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "MAX_PENDING_TOUCHES", 10)
    for n in range(25):
        gateway.registry.touch(f"session-{n}", "someone", None)
    gateway.registry.touch("session-3", "someone", "10.0.0.1")  # one already waiting is updated
    assert len(gateway.registry._touches) == 10
    assert gateway.registry._touches["session-3"].ip == "10.0.0.1"
    gateway.registry.flush_touches()  # rows that do not exist: nothing to update, nothing fails
    gateway.registry.touch("session-99", "someone", None)
    assert list(gateway.registry._touches) == ["session-99"]


# --- start-up ----------------------------------------------------------------------------------


def test_start_up_reads_only_revocations_that_can_still_be_used(gateway: Gateway) -> None:
    """Found at a year of use: every revoked row ever written was read at each start."""
    users = add_users(gateway.engine, 200)
    old = add_sessions(gateway.engine, users, 5, revoked=True, expires_at=NOW - 3600)
    live = add_sessions(gateway.engine, users[:3], 2, revoked=True, expires_at=NOW + 3600)
    unending = add_sessions(gateway.engine, users[:1], 1, revoked=True, expires_at=None)
    add_sessions(gateway.engine, users, 1)  # not revoked
    analyze(gateway.engine)
    with Statements(gateway.engine) as sent:
        gateway.registry.load()
    assert set(gateway.registry.view.revoked) == set(live + unending)
    assert not set(old) & set(gateway.registry.view.revoked)
    session_reads = [p for p in sent.plans().split("\n") if "auth_sessions" in p]
    assert session_reads, sent.sent
    assert all("ix_auth_sessions_revoked_expiry" in p for p in session_reads), session_reads


# --- every list walks an index -----------------------------------------------------------------


@pytest.fixture
def populated(gateway: Gateway) -> Gateway:
    """A few thousand rows of each, analysed, so that planners choose as they would at scale."""
    users = add_users(gateway.engine, 3000)
    add_users(gateway.engine, 40, role="pending", tag="p")
    add_sessions(gateway.engine, users[:10], 200)
    add_sessions(gateway.engine, users[10:], 1, revoked=True, expires_at=NOW - 10)
    add_events(gateway.engine, 12000)
    analyze(gateway.engine)
    return gateway


CASES: dict[str, tuple[Callable[[Gateway], object], set[str]]] = {
    "users, first page": (lambda g: g.directory.users(limit=50), {"ix_users_created"}),
    "users, a later page": (
        lambda g: g.directory.users(cursor=Cursor(NOW - 86400, "5").encode(), limit=50),
        {"ix_users_created"},
    ),
    "pending users": (lambda g: g.directory.users(role="pending", limit=50), {"ix_users_role_created"}),
    "users by prefix": (lambda g: g.directory.users(query="u00012", limit=50), {"ix_users_name_prefix"}),
    "a person's sessions": (
        lambda g: g.directory.sessions_of(_first_user(g), limit=20),
        {"ix_auth_sessions_user_created"},
    ),
    "events": (lambda g: g.audit.query(AuditQuery(), limit=50), {"ix_audit_events_at"}),
    "events, a later page": (
        lambda g: g.audit.query(AuditQuery(), cursor=Cursor(NOW - 40_000, "5000").encode(), limit=50),
        {"ix_audit_events_at"},
    ),
    "events by name": (lambda g: g.audit.query(AuditQuery(event="user.deleted")), {"ix_audit_events_event"}),
    "events by actor": (
        lambda g: g.audit.query(AuditQuery(actor="a7@example.com")),
        {"ix_audit_events_actor"},
    ),
    "events by subject": (
        lambda g: g.audit.query(AuditQuery(subject="s7@example.com")),
        {"ix_audit_events_subject"},
    ),
    "events by outcome": (
        lambda g: g.audit.query(AuditQuery(outcome="refused")),
        {"ix_audit_events_outcome"},
    ),
}


def _first_user(gateway: Gateway) -> str:
    with gateway.engine.connect() as conn:
        return str(conn.scalar(select(AuthSession.user_id).group_by(AuthSession.user_id).limit(1)))


@pytest.mark.parametrize("case", list(CASES))
def test_every_list_walks_an_index(populated: Gateway, case: str) -> None:
    """Found at 6M events and 100k users: filters and pages that read (and sorted) every row."""
    run, indexes = CASES[case]
    with Statements(populated.engine) as sent:
        run(populated)
    plans = sent.plans()
    for index in indexes:
        assert index in plans, plans
    assert "Seq Scan" not in plans, plans  # PostgreSQL: a table read whole
    if "later page" in case:  # the cursor bounds the index walk: not a walk from the start, filtering
        assert "SEARCH" in plans or "Index Cond: (ROW(" in plans, plans
    for line in plans.splitlines():  # SQLite: "SCAN <table>" without an index is a table read whole
        assert not (line.startswith("SCAN ") and "INDEX" not in line and "SUBQUERY" not in line), plans


# --- paging ------------------------------------------------------------------------------------


def test_cursors_visit_every_row_once_in_order_despite_ties(gateway: Gateway) -> None:
    users = add_users(gateway.engine, 23)  # all created in the same second
    add_sessions(gateway.engine, users[:1], 17)  # in pairs to the second
    add_events(gateway.engine, 31)

    def walk(fetch: Callable[[str | None], Any]) -> list[Any]:
        rows: list[Any] = []
        cursor = None
        while True:
            page = fetch(cursor)
            assert len(page.rows) <= 4
            rows.extend(page.rows)
            if page.next_cursor is None:
                return rows
            cursor = page.next_cursor

    users_seen = walk(lambda c: gateway.directory.users(cursor=c, limit=4))
    assert [u.id for u in users_seen] == sorted(users)  # ties broken by id, ascending
    sessions_seen = walk(lambda c: gateway.directory.sessions_of(users[0], cursor=c, limit=4))
    keys = [(s.created_at, s.id) for s in sessions_seen]
    assert len(keys) == 17 and keys == sorted(keys, reverse=True)
    events_seen = walk(lambda c: gateway.audit.query(AuditQuery(), cursor=c, limit=4))
    assert len(events_seen) == 31 and len({(e.at, e.actor, e.event) for e in events_seen}) == 31
    assert [e.at for e in events_seen] == sorted((e.at for e in events_seen), reverse=True)


def raw_cursor(*values: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode().rstrip("=")


BAD_CURSORS = [
    "x",
    "!!!!",
    "W10",
    "WzEsMiwzXQ",
    "WyJhIiwiYiJd",
    "Wy0xLCJhIl0",
    "a" * 201,
    "WzEuNSwiYSJd",
    raw_cursor(1_700_000_000, "\u00b2"),  # a digit to str.isdigit, not to int(): found by review
    raw_cursor(1_700_000_000, "9" * 40),  # past any integer column
    raw_cursor(1, "\u0000"),  # PostgreSQL refuses NUL in text: a 500 before
]


@pytest.mark.parametrize("path", [USERS, AUDIT, SESSIONS])
@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_is_a_clear_400(site: Site, path: str, cursor: str) -> None:
    client, _, admin = site
    response = client.get(path, params={"cursor": cursor}, headers=bearer(admin["token"]))
    if cursor == raw_cursor(1_700_000_000, "9" * 40) and path != AUDIT:  # a fine key for string ids
        assert response.status_code == 200
        return
    if len(cursor) > 200:  # refused before it is read, as any over-long parameter
        assert response.status_code == 422 and set(response.json()) == {"detail"}
    else:
        assert refused(response, 400).startswith("Invalid cursor")


@pytest.mark.parametrize("path", [USERS, AUDIT])
def test_numbered_pages_stop_where_they_would_count_past_everything(site: Site, path: str) -> None:
    client, _, admin = site
    deep = {"page": MAX_OFFSET // 50 + 2, "limit": 50}
    assert "next_cursor" in refused(client.get(path, params=deep, headers=bearer(admin["token"])), 400)
    assert (
        client.get(path, params={"page": 2, "limit": 50}, headers=bearer(admin["token"])).status_code == 200
    )


@given(st.text(max_size=200))
def test_decoding_any_text_is_a_cursor_or_a_400(text_: str) -> None:
    try:
        cursor = Cursor.decode(text_)
    except BadRequestError:
        return  # the only error it may raise: a 400 with its message
    assert Cursor.decode(cursor.encode()) == cursor


def test_the_apis_page_with_cursors(site: Site) -> None:
    client, gw, admin = site
    add_users(gw.engine, 7)
    me = gw.directory.users(query="admin@").rows[0].id
    add_sessions(gw.engine, [me], 5)
    headers = bearer(admin["token"])
    emails, cursor = [], None
    while True:
        body = client.get(
            USERS, params={"limit": 3, **({"cursor": cursor} if cursor else {})}, headers=headers
        ).json()
        assert body["total"] == 8
        emails += [u["email"] for u in body["users"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert len(emails) == len(set(emails)) == 8
    sessions, url = [], f"{SESSIONS}?limit=2"
    while url:
        response = client.get(url, headers=headers)
        sessions += [s["id"] for s in response.json()]
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else ""
        assert not link or link.endswith('; rel="next"')
    assert len(sessions) == len(set(sessions)) == 6  # five made here, and the sign-up's


# --- pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_pending_list_is_right_past_ten_thousand_people(
    site: Site,
) -> None:
    """Found at 100k users: the page filtered the first 10,000 accounts for pending ones."""
    client, gw, admin = site
    add_users(gw.engine, 10_050)
    waiting = ["late1@example.com", "late2@example.com", "late3@example.com"]
    for email in waiting:
        signup(client, email)
    with gw.engine.begin() as conn:
        conn.execute(User.__table__.update().where(User.email.in_(waiting)).values(role="pending"))
    client.cookies.set("token", admin["token"])
    page = client.get("/admin").text
    assert "Pending (3)" in page
    for email in waiting:
        assert f"Approve {email}" in page
    assert 'Users <span class="muted small">(10,000+)</span>' in page
    assert page.count('id="user-') == 50 and 'rel="next"' in page
    following = page.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    assert client.get(following).status_code == 200


def test_the_account_page_shows_sessions_a_page_at_a_time(
    site: Site,
) -> None:
    client, gw, admin = site
    me = gw.directory.users(query="admin@").rows[0].id
    add_sessions(gw.engine, [me], 60)
    client.cookies.set("token", admin["token"])
    first = client.get("/account").text
    assert first.count('/revoke" class="inline">') == 50
    assert 'Active sessions <span class="muted small">(61)</span>' in first
    cursor = first.split("?sessions=")[1].split('"')[0]
    second = client.get(f"/account?sessions={cursor}").text
    assert second.count('/revoke" class="inline">') == 11 and "Newest sessions" in second
    assert client.get("/account?sessions=garbage").status_code == 200  # an edited address: the first page


# --- pruning -----------------------------------------------------------------------------------


def test_the_change_log_and_the_view_are_pruned_by_housekeeping(gateway: Gateway) -> None:
    with gateway.engine.begin() as conn:
        conn.execute(
            insert(AuthChange),
            [{"at": NOW - 2 * 86400, "kind": "user", "user_id": "x"}] * 50
            + [{"at": NOW, "kind": "user", "user_id": "y"}] * 2,
        )
    gateway.registry.view.revoke("expired", NOW - 5)
    gateway.registry.view.revoke("live", NOW + 3600)
    deleted = gateway.housekeeper.run_once(NOW)
    assert deleted["change-log entries"] == 50
    assert deleted["expired revocations in memory"] == 1
    assert set(gateway.registry.view.revoked) == {"live"}
    with gateway.engine.connect() as conn:
        assert conn.scalar(select(AuthChange.user_id).distinct()) == "y"


def test_a_backlog_is_drained_run_after_run_not_hour_after_hour() -> None:
    """A year of history on first upgrade: a full run means more is waiting; the next comes soon."""
    full = retention.BATCH * retention.MAX_BATCHES
    counts = iter([full, full, 7, 0])
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) > 4:
            raise asyncio.CancelledError

    keeper = retention.Housekeeper([retention.Job("rows", lambda now, stop: next(counts))])
    keeper._sleep = sleep  # asyncio.sleep itself stays: other threads of this process use it
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(keeper._loop())
    first, *after = delays
    assert first < 15
    assert [d < 2 * retention.BACKLOG_INTERVAL for d in after] == [True, True, False, False]


def test_what_the_view_remembers_of_changes_ends_with_the_tokens_they_ended() -> None:
    """Replaced stamps and deleted users were kept for the life of the process."""
    now = int(time.time())
    view = SessionView(token_lifetime=3600)
    alice = UserState(id="a", email="a@example.com", name="A", role=Role.USER, active=True, session_stamp="1")
    view.put_user(alice)
    view.put_user(replace(alice, session_stamp="2"))
    view.drop_user("b")
    view.prune(now + 3600)  # tokens issued before the changes may still be valid: kept
    assert set(view.retired) == {("a", "1")} and set(view.deleted) == {"b"}
    view.prune(now + 3600 + 120)
    assert not view.retired and not view.deleted
    forever = SessionView(token_lifetime=None)  # JWT_EXPIRES_IN=-1: tokens never expire, nor do these
    forever.drop_user("b")
    forever.prune(now + 10**8)
    assert set(forever.deleted) == {"b"}


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_batch_cut_short_by_another_instance_does_not_end_pruning(gateway: Gateway) -> None:
    """Found by bench/scale.py on PostgreSQL: a batch cut short by the other instance's deletes
    was read as "nothing left", and 575,000 expired rows waited an hour each time."""
    users = add_users(gateway.engine, 100)
    add_sessions(gateway.engine, users, 20, expires_at=NOW - 3600)  # 2,000 expired
    expired = select(AuthSession.id).where(AuthSession.expires_at < NOW).limit(50).scalar_subquery()
    with gateway.engine.connect() as other:  # the other instance: 50 of the same rows, not yet committed
        other.execute(AuthSession.__table__.delete().where(AuthSession.id.in_(expired)))
        with ThreadPoolExecutor(max_workers=1) as pool:
            pruning = pool.submit(prune_before, gateway.sessions, AuthSession.expires_at, NOW, batch=200)
            time.sleep(0.5)  # its first batch picked those 50 among its 200, and waits for their locks
            other.commit()  # they are gone: that batch deletes 150
            deleted = pruning.result(timeout=30)
    with gateway.engine.connect() as conn:
        left = conn.scalar(select(func.count()).select_from(AuthSession))
    assert (deleted, left) == (1_950, 0)


def test_last_seen_times_are_written_once_a_minute_and_at_stop(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = add_users(gateway.engine, 1)
    (session,) = add_sessions(gateway.engine, users, 1)
    gateway.registry.flush_touches()  # just written: the next write is a minute away
    gateway.registry.touch(session, users[0], "10.0.0.7")
    with Statements(gateway.engine) as sent:
        gateway.registry.flush_touches(due_only=True)
    assert sent.sent == [] and len(gateway.registry._touches) == 1
    asyncio.run(gateway.sync.stop())  # a clean stop writes what waits, due or not
    with gateway.engine.connect() as conn:
        assert conn.scalar(select(AuthSession.ip).where(AuthSession.id == session)) == "10.0.0.7"
    monkeypatch.setattr(registry_module, "LAST_SEEN_INTERVAL", 0.0)
    gateway.registry.touch(session, users[0], "10.0.0.8")
    gateway.registry.flush_touches(due_only=True)
    with gateway.engine.connect() as conn:
        assert conn.scalar(select(AuthSession.ip).where(AuthSession.id == session)) == "10.0.0.8"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_prefix_search_finds_capitals_beyond_ascii_and_never_fails(site: Site) -> None:
    """Found by review: SQLite's lower() is ASCII-only ("Élodie" was never found), and a prefix
    ending in U+D7FF made an unencodable successor (500)."""
    client, _, admin = site
    signup(client, "e@example.com", name="Élodie Admin")
    for query in ("élodie", "Élodie", "ÉLO"[:1] + "lo"):
        found = client.get(USERS, params={"query": query}, headers=bearer(admin["token"])).json()
        assert [u["email"] for u in found["users"]] == ["e@example.com"], query
    for query in ("a\ud7ff", "\U0010ffff", "z\U0010ffff"):
        assert client.get(USERS, params={"query": query}, headers=bearer(admin["token"])).status_code == 200


def test_the_next_page_link_names_no_host(site: Site) -> None:
    client, gw, admin = site
    me = gw.directory.users(query="admin@").rows[0].id
    add_sessions(gw.engine, [me], 3)
    link = client.get(
        SESSIONS, params={"limit": 1}, headers={**bearer(admin["token"]), "host": "evil.example"}
    )
    assert link.headers["link"].startswith("</api/v1/auths/sessions?cursor=")
