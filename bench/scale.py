"""Flat as it grows (issue 13): what wardgate costs with 1k, 10k and 100k users, side by side.

For each size and each database (SQLite in a temporary directory; PostgreSQL when a server URL is
given, one fresh database per size, dropped afterwards) the script

1. creates the schema with `python -m wardgate db upgrade` and fills it in bulk, never through the
   HTTP API: SQLAlchemy Core executemany in 10,000-row chunks on SQLite (WAL, synchronous=OFF while
   loading), COPY on PostgreSQL (then VACUUM ANALYZE, as autovacuum would do);
2. starts one real `python -m wardgate serve` (A), then a second one on the same database (B, no
   Redis), waits until their housekeeping has pruned the expired sessions (as it would have
   during the year the data stands for: no pass then runs while measuring), and measures

   - start: process start to `/health` 200, VmRSS and VmHWM of A after start and at the end;
   - admin and audit queries through the HTTP API as the admin (median of 5 calls, ms);
   - revocation delay: a sign-out on A until B refuses the token (B learns it from the change log,
     polled every SESSION_SYNC_INTERVAL), idle and while the many-token load below runs against A;
   - `GET /api/v1/auths/` with ONE token vs MANY distinct tokens (live sessions of distinct users,
     up to 20,000), `wrk -t1` with the same Lua script in both runs (it rotates through a file of
     tokens, one line in the first run), and the ratio many/one (goal >= 0.8);

then prints one table, a column per size and database, and the ratio largest/smallest size per row.
The goal is flat (or logarithmic) rows while the data grows 100-fold.

| preset | users   | sessions  | audit events |
|--------|---------|-----------|--------------|
| 1k     | 1,000   | 10,000    | 10,000       |
| 10k    | 10,000  | 100,000   | 100,000      |
| 100k   | 100,000 | 1,000,000 | 1,000,000    |

The data looks like a year of use: ~5% of accounts pending, ~20% of sessions revoked, most
sessions expired (a few hundred live, plus the load's), audit events spread over the year with a
mix of event names, actors and subjects. Tokens are minted here with wardgate's `TokenCodec` and the
run's random WEBUI_SECRET_KEY, and their session rows inserted with the rest.

    .venv/bin/python bench/scale.py --quick                    # 1k and 10k, 3 s loads: a smoke run
    source /tmp/wg-dev.env                                     # WARDGATE_TEST_POSTGRES_URL
    .venv/bin/python bench/scale.py --sizes 1k,10k,100k        # SQLite and PostgreSQL, 15-20 min

Everything listens on loopback; every process is stopped by its pid and every wait is bounded.
One file on purpose (longer than the ~300-line guidance): a hand-run benchmark is easier to read,
copy and trust whole. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import harness
import httpx
from sqlalchemy import Engine, Table, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from wardgate.security.passwords import PasswordHasher
from wardgate.security.tokens import TokenCodec
from wardgate.storage.models import AppState, AuditEvent, AuthSession, User

SESSION_USER = "/api/v1/auths/"
SIGNOUT = "/api/v1/auths/signout"
DAY = 86_400
YEAR = 365 * DAY
LIFETIME = timedelta(days=7)  # JWT_EXPIRES_IN's default: a session row lives as long as its token
MAX_TOKENS = 20_000  # distinct tokens in the many-token load (--tokens)
HEAVY_SESSIONS = 1_000  # live sessions of one account, for its session list
HEAVY_MINTED = 41  # of those, with a token: one to list them, 40 to revoke (20 per phase at most)
LIVE_SESSIONS = 300  # other live sessions, spread over the accounts
REVOKED_SHARE = 0.20
CHUNK = 10_000
STARTUP_SECONDS = 120.0
EXPIRED_GRACE = 300  # seconds past its expiry before a session row is pruned (sessions/registry.py)
SETTLE_SECONDS = 400.0  # bound on the wait for the housekeeping to prune the expired sessions
POLL_SECONDS = 0.01
GIVE_UP_SECONDS = 15.0
QUERY_REPEATS = 5
DEEP_PAGE = 20
ADMIN_EMAIL = "admin@example.com"
HEAVY_EMAIL = "many.sessions@example.com"
GOAL_MANY_ONE = 0.8
# Out of reach, so that the measurements meet no 429: B answers one 401 per revocation sample, and
# a sign-in or sign-up here would be the bench's, not an attacker's. Everything else is default,
# except a year of audit history kept (the default 90 days would prune it at start) and room for
# the 1,000 live sessions of one account (the default cap is 100; it bounds new sign-ins only).
SERVER_SETTINGS = {
    "AUTH_FAILURE_RATE_LIMIT": "1000000/1m",
    "SIGNIN_RATE_LIMIT": "1000000/1m",
    "SIGNIN_IP_RATE_LIMIT": "1000000/1m",
    "SIGNUP_RATE_LIMIT": "1000/1m",
    "AUDIT_RETENTION_DAYS": "400",
    "MAX_SESSIONS_PER_USER": "1000",
}
_TOKEN_FORM = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")
ROTATE_LUA = """\
local tokens = {}
local i = 0
function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
end
function request()
  i = i % #tokens + 1
  return wrk.format(nil, nil, {["Authorization"] = "Bearer " .. tokens[i]})
end
"""

Row = dict[str, Any]
Column = dict[str, float | None]  # one size on one database: metric key -> value (None: n/a)


@dataclass(frozen=True)
class Size:
    """A preset: how many users, sessions and audit events."""

    name: str
    users: int
    sessions: int
    events: int


SIZES = {
    s.name: s
    for s in (
        Size("1k", 1_000, 10_000, 10_000),
        Size("10k", 10_000, 100_000, 100_000),
        Size("100k", 100_000, 1_000_000, 1_000_000),
    )
}


@dataclass
class People:
    """The accounts as inserted: index 0 is the admin, 1 the account with many sessions."""

    ids: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    stamps: list[str] = field(default_factory=list, repr=False)
    roles: list[str] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)


@dataclass(frozen=True)
class Fixture:
    """What the measurements need from the data; repr hides the tokens so they are never printed."""

    admin_token: str = field(repr=False)
    heavy_token: str = field(repr=False)
    revocation_tokens: list[str] = field(repr=False)
    load_tokens: list[str] = field(repr=False)
    email_prefix: str
    actor: str


@dataclass(frozen=True)
class Server:
    """A running `wardgate serve`."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    start_s: float


@dataclass(frozen=True)
class Query:
    """One timed admin request; `check` names a problem with the answer (such as an ignored filter)."""

    key: str
    path: str
    params: dict[str, str]
    who: str = "admin"  # or "heavy": the account with 1,000 sessions
    cookie: bool = False
    deep: bool = False  # follow next_cursor to page DEEP_PAGE, then time that page
    check: Callable[[httpx.Response], str | None] | None = None


# --- the data ------------------------------------------------------------------------------------

FIRST = "alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert sybil"
LAST = "smith jones brown taylor wilson davies evans thomas roberts walker wright green hall wood"
DOMAINS = ("example.com", "example.org", "corp.example.net")
AGENTS = (
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "python-httpx/0.27.0",
    "OpenWebUI-Desktop/0.3",
)
# (event, outcome, weight, by): "self" events are the account's own (actor = subject), "admin" ones
# an administrator's on the account.
EVENTS = (
    ("auth.signin", "success", 44, "self"),
    ("auth.signin", "failure", 8, "self"),
    ("auth.signout", "success", 22, "self"),
    ("auth.session_revoked", "success", 5, "self"),
    ("auth.sessions_revoked", "success", 2, "self"),
    ("auth.signup", "success", 3, "self"),
    ("auth.password_changed", "success", 2, "self"),
    ("ratelimit.tripped", "refused", 3, "self"),
    ("api_key.created", "success", 2, "self"),
    ("api_key.revoked", "success", 1, "self"),
    ("auth.sso_linked", "success", 1, "self"),
    ("user.role_changed", "success", 3, "admin"),
    ("user.updated", "success", 2, "admin"),
    ("user.disabled", "success", 1, "admin"),
    ("user.created", "success", 1, "admin"),
)


def make_people(size: Size, rng: random.Random) -> People:
    """The accounts: the admin, the account with many sessions, then ~5% pending, ~1% disabled."""
    people = People()
    firsts, lasts = FIRST.split(), LAST.split()
    for index in range(size.users):
        if index == 0:
            email, role = ADMIN_EMAIL, "admin"
        elif index == 1:
            email, role = HEAVY_EMAIL, "user"
        else:
            first, last = firsts[index % len(firsts)], lasts[index // len(firsts) % len(lasts)]
            email = f"{first}.{last}{index}@{DOMAINS[index % len(DOMAINS)]}"
            draw = rng.random()
            role = "pending" if draw < 0.05 else "admin" if draw < 0.052 else "user"
        people.ids.append(str(uuid.UUID(int=rng.getrandbits(128), version=4)))
        people.emails.append(email)
        people.stamps.append(secrets.token_urlsafe(16))
        people.roles.append(role)
        people.active.append(index < 2 or rng.random() >= 0.01)
    return people


def user_rows(people: People, now: int, rng: random.Random) -> Iterator[Row]:
    """One row per account, created over the last year in order; only the admin has a password."""
    count = len(people.ids)
    admin_hash = PasswordHasher().hash(secrets.token_urlsafe(18))  # one real Argon2id hash, never used
    for index, user_id in enumerate(people.ids):
        created = now - YEAR + index * (YEAR - DAY) // count
        email = people.emails[index]
        yield {
            "id": user_id,
            "email": email,
            "name": email.split("@")[0].replace(".", " ").title(),
            "role": people.roles[index],
            "active": people.active[index],
            "password_hash": admin_hash if index == 0 else None,
            "session_stamp": people.stamps[index],
            "profile_image_url": "/user.png",
            "created_at": created,
            "updated_at": created,
            "last_active_at": rng.randrange(created, now),
        }


def session_row(
    session_id: str, user_id: str, created: int, revoked: int | None, now: int, rng: random.Random
) -> Row:
    """A password session that lives LIFETIME, last seen somewhere in its first half (never after now)."""
    expires = created + int(LIFETIME.total_seconds())
    return {
        "id": session_id,
        "user_id": user_id,
        "auth_method": "password",
        "created_at": created,
        "expires_at": expires,
        "last_seen_at": min(now, created + rng.randrange(int(LIFETIME.total_seconds()) // 2)),
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(AGENTS),
        "revoked_at": revoked,
    }


def minted_rows(codec: TokenCodec, user_id: str, stamp: str, count: int) -> tuple[list[str], list[Row]]:
    """`count` live sessions of one account, with their tokens."""
    tokens, rows = [], []
    for _ in range(count):
        issued = codec.issue(user_id, stamp)
        tokens.append(issued.token)
        rows.append(
            {
                "id": issued.session_id,
                "user_id": user_id,
                "auth_method": "password",
                "created_at": issued.issued_at,
                "expires_at": issued.expires_at,
                "last_seen_at": issued.issued_at,
                "ip": "127.0.0.1",
                "user_agent": "wardgate-bench",
                "revoked_at": None,
            }
        )
    return tokens, rows


def other_sessions(size: Size, people: People, minted: int, now: int, rng: random.Random) -> Iterator[Row]:
    """The rest of the sessions: the heavy account's, a few hundred live, ~20% revoked, the others
    expired; created over the past year (a revoked one from the last week has not expired yet)."""
    lifetime = int(LIFETIME.total_seconds())
    for _ in range(HEAVY_SESSIONS - HEAVY_MINTED):  # the minted ones are inserted already
        yield session_row(_uuid(rng), people.ids[1], now - rng.randrange(lifetime - 60), None, now, rng)
    users = len(people.ids)
    live = min(LIVE_SESSIONS, users)
    rest = max(0, size.sessions - minted - (HEAVY_SESSIONS - HEAVY_MINTED) - live)
    revoked = int(size.sessions * REVOKED_SHARE)
    for index in range(live + rest):
        user_id = people.ids[2 + _skewed(users - 2, rng)]
        if index < live:
            yield session_row(_uuid(rng), user_id, now - rng.randrange(lifetime - 60), None, now, rng)
        elif index < live + revoked:
            created = now - rng.randrange(YEAR)
            ended = min(now, created + rng.randrange(lifetime // 2))
            yield session_row(_uuid(rng), user_id, created, ended, now, rng)
        else:
            created = now - rng.randrange(lifetime + DAY, YEAR)
            yield session_row(_uuid(rng), user_id, created, None, now, rng)


def audit_rows(size: Size, people: People, now: int, rng: random.Random) -> Iterator[Row]:
    """Audit events spread evenly over the past year, oldest first (ids follow time, as in use)."""
    kinds = [(name, outcome, by) for name, outcome, _, by in EVENTS]
    weights = list(itertools.accumulate(weight for *_, weight, _ in EVENTS))
    chosen = rng.choices(kinds, cum_weights=weights, k=size.events)
    users = len(people.ids)
    for index, (name, outcome, by) in enumerate(chosen):
        email = people.emails[2 + _skewed(users - 2, rng)]
        yield {
            "at": now - YEAR + index * YEAR // size.events,
            "event": name,
            "outcome": outcome,
            "actor": ADMIN_EMAIL if by == "admin" else email,
            "subject": email,
            "ip": f"198.51.100.{rng.randrange(1, 255)}",
            "user_agent": rng.choice(AGENTS),
            "detail": f"session={rng.getrandbits(32):08x}" if "session" in name or "out" in name else None,
            "count": rng.randrange(1, 40) if outcome == "refused" else 1,
            "window_key": f"bench-{index}" if outcome == "refused" else None,
        }


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _skewed(count: int, rng: random.Random) -> int:
    """An index in [0, count): some accounts are far busier than others."""
    return min(count - 1, int(count * rng.random() ** 2))


# --- loading -------------------------------------------------------------------------------------


def populate(database_url: str, size: Size, secret: str, max_tokens: int = MAX_TOKENS) -> Fixture:
    """Insert the accounts, sessions and audit events of `size`; return the tokens and names to use."""
    rng, now = random.Random(13), int(time.time())
    people = make_people(size, rng)
    codec = TokenCodec([secret], LIFETIME)
    load_users = [i for i in range(2, size.users) if people.roles[i] == "user" and people.active[i]]
    load_tokens: list[str] = []
    minted: list[Row] = []
    for index in load_users[:max_tokens]:
        tokens, rows = minted_rows(codec, people.ids[index], people.stamps[index], 1)
        load_tokens += tokens
        minted += rows
    admin_tokens, admin_rows = minted_rows(codec, people.ids[0], people.stamps[0], 1)
    heavy_tokens, heavy_rows = minted_rows(codec, people.ids[1], people.stamps[1], HEAVY_MINTED)
    minted += admin_rows + heavy_rows
    engine = loading_engine(database_url)
    try:
        with engine.begin() as connection:
            bulk_insert(connection, User.__table__, user_rows(people, now, rng))  # type: ignore[arg-type]
            if connection.scalar(select(AppState.key).where(AppState.key == "first_admin")) is None:
                connection.execute(insert(AppState).values(key="first_admin", value=ADMIN_EMAIL))
            sessions = itertools.chain(minted, other_sessions(size, people, len(minted), now, rng))
            bulk_insert(connection, AuthSession.__table__, sessions)  # type: ignore[arg-type]
            bulk_insert(connection, AuditEvent.__table__, audit_rows(size, people, now, rng))  # type: ignore[arg-type]
        finish_loading(engine)
    finally:
        engine.dispose()
    middle = people.emails[size.users // 2]
    return Fixture(
        admin_token=admin_tokens[0],
        heavy_token=heavy_tokens[0],
        revocation_tokens=heavy_tokens[1:],
        load_tokens=load_tokens,
        email_prefix=middle.split(".")[0] + "." + middle.split(".")[1][:2],
        actor=people.emails[2 + size.users // 10],
    )


def loading_engine(database_url: str) -> Engine:
    """An engine for the bulk load: on SQLite, WAL and no fsync (the data is throwaway until served)."""
    engine = create_engine(database_url)
    if engine.dialect.name == "sqlite":

        def pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=OFF")
            cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB: random uuid keys touch every page
            cursor.close()

        event.listen(engine, "connect", pragmas)
    return engine


def bulk_insert(connection: Any, table: Table, rows: Iterable[Row]) -> None:
    """COPY on PostgreSQL; Core executemany in CHUNK-row batches elsewhere."""
    if connection.dialect.name == "postgresql":
        copy_rows(connection, table, rows)
        return
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        connection.execute(insert(table), chunk)


def copy_rows(connection: Any, table: Table, rows: Iterable[Row]) -> None:
    """`COPY table (columns) FROM STDIN` through psycopg, in the connection's transaction."""
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return
    quote = connection.dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in first)
    statement = f"COPY {quote(table.name)} ({columns}) FROM STDIN"
    with connection.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for row in itertools.chain([first], iterator):
            copy.write_row(tuple(row.values()))


def finish_loading(engine: Engine) -> None:
    """PostgreSQL: VACUUM ANALYZE (what autovacuum does after a bulk load); SQLite: fold the WAL in.

    SQLite gets no ANALYZE: wardgate never runs one, so its planner works without statistics in use.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("VACUUM ANALYZE"))
        else:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


def upgrade_schema(database_url: str, data_dir: Path, secret: str) -> None:
    """`python -m wardgate db upgrade`, as an operator would create the schema."""
    env = {"DATABASE_URL": database_url, "DATA_DIR": str(data_dir), "WEBUI_SECRET_KEY": secret}
    done = subprocess.run(
        [sys.executable, "-m", "wardgate", "db", "upgrade"],
        env={**env, "GLOBAL_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wardgate db upgrade failed ({done.returncode}):\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    """A database file in the temporary directory (removed with it)."""
    (workdir / "db").mkdir()
    yield f"sqlite:///{workdir / 'db' / 'wardgate.db'}"


@contextlib.contextmanager
def postgres_database(server_url: str, name: str) -> Iterator[str]:
    """A fresh database `name` on the server (dropped first if a crashed run left it, and after)."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    drop = text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    try:
        with admin.connect() as connection:
            connection.execute(drop)
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(drop)
        admin.dispose()


# --- the servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def running_server(data_dir: Path, database_url: str, secret: str) -> Iterator[Server]:
    """Start `python -m wardgate serve`, time it until /health answers 200, always stop it."""
    data_dir.mkdir()
    port = harness.free_port()
    env = {
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEBUI_SECRET_KEY": secret,
        "GLOBAL_LOG_LEVEL": "WARNING",
        **SERVER_SETTINGS,
    }
    log_path = data_dir / "server.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wardgate", "serve"],
            env=env,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(base_url, process, log_path)
        try:
            yield Server(base_url, process, log_path, time.perf_counter() - started)
        except Exception:
            # The log goes with the temporary directory: show its end while it is there.
            print(f"wardgate (pid {process.pid}) log, last lines:\n{log_tail(log_path)}", file=sys.stderr)
            raise
    finally:
        harness.stop_process(process)


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /health every 50 ms; fail with the log's tail if the server exits or never answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wardgate exited with {process.returncode}:\n{log_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"wardgate did not answer within {STARTUP_SECONDS:.0f} s:\n{log_tail(log_path)}")


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The end of a server's output (the secret key is never logged)."""
    text_ = log_path.read_text(errors="replace") if log_path.exists() else ""
    return "\n".join(text_.splitlines()[-lines:])


def memory_mb(pid: int) -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of a process in MB, from /proc/PID/status."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None, None
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    rss, hwm = found.get("VmRSS"), found.get("VmHWM")
    return (int(rss) / 1024 if rss else None), (int(hwm) / 1024 if hwm else None)


def settle(engine: Engine) -> float | None:
    """Wait until the servers' housekeeping has pruned every expired session (200,000 rows a pass
    per instance, a pass a minute while a backlog remains), so that no pass runs while we measure;
    return the seconds waited, None when SETTLE_SECONDS were not enough."""
    started = time.monotonic()
    cutoff = int(time.time()) - EXPIRED_GRACE
    while time.monotonic() - started < SETTLE_SECONDS:
        if session_rows(engine, expired_before=cutoff) == 0:
            return time.monotonic() - started
        time.sleep(1.0)
    return None


def session_rows(engine: Engine, *, expired_before: int | None = None) -> int:
    """How many session rows the database holds (that expired before a time)."""
    query = select(func.count()).select_from(AuthSession)
    if expired_before is not None:
        query = query.where(AuthSession.expires_at < expired_before)
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def api_client(base_url: str) -> httpx.Client:
    """A client that keeps no cookies: each request carries the credential it is given."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(base_url=base_url, timeout=60, cookies=jar, follow_redirects=False)


# --- queries -------------------------------------------------------------------------------------


def queries(fixture: Fixture) -> list[Query]:
    """The admin's and the heavy account's requests, as a person would wait for them."""
    users, audit = "/api/v1/users/", "/api/v1/audit"
    return [
        Query("q_users", users, {"limit": "50"}),
        Query("q_users_query", users, {"query": fixture.email_prefix, "limit": "50"}),
        Query("q_users_pending", users, {"role": "pending", "limit": "50"}, check=_only_pending),
        Query("q_users_deep", users, {"limit": "50"}, deep=True),
        Query("q_audit", audit, {"limit": "50"}),
        Query("q_audit_event", audit, {"event": "auth.signin", "limit": "50"}),
        Query("q_audit_actor", audit, {"actor": fixture.actor, "limit": "50"}),
        Query("q_audit_subject", audit, {"subject": fixture.actor, "limit": "50"}),
        Query("q_audit_deep", audit, {"limit": "50"}, deep=True),
        Query("q_admin_page", "/admin", {}, cookie=True),
        Query("q_account_page", "/account", {}, who="heavy", cookie=True),
        Query("q_sessions", "/api/v1/auths/sessions", {"limit": "50"}, who="heavy", check=_at_most_50),
    ]


def _only_pending(response: httpx.Response) -> str | None:
    roles = {user.get("role") for user in response.json().get("users", [])}
    return None if roles <= {"pending"} else f"role filter ignored (roles {sorted(roles)})"


def _at_most_50(response: httpx.Response) -> str | None:
    rows = len(response.json())
    return None if rows <= 50 else f"limit ignored ({rows} rows)"


def time_query(client: httpx.Client, query: Query, fixture: Fixture) -> tuple[float | None, str]:
    """Median milliseconds of QUERY_REPEATS calls after one untimed call; None and why when refused."""
    token = fixture.admin_token if query.who == "admin" else fixture.heavy_token
    credential = {"Cookie": f"token={token}"} if query.cookie else {"Authorization": f"Bearer {token}"}
    params, note = query.params, ""
    if query.deep:
        found = deep_params(client, query, credential)
        if found is None:
            return None, "no next_cursor (and no page)"
        params, note = found
    first = client.get(query.path, params=params, headers=credential)
    if first.status_code != 200:
        return None, f"answered {first.status_code}"
    problem = query.check(first) if query.check else None
    samples = []
    for _ in range(QUERY_REPEATS):
        started = time.perf_counter()
        status = client.get(query.path, params=params, headers=credential).status_code
        samples.append((time.perf_counter() - started) * 1000)
        if status != 200:
            return None, f"answered {status} on a repeat"
    return statistics.median(samples), "; ".join(filter(None, [note, problem]))


def deep_params(
    client: httpx.Client, query: Query, credential: dict[str, str]
) -> tuple[dict[str, str], str] | None:
    """The parameters of page DEEP_PAGE: follow `next_cursor`; an API without cursors gets `page=`."""
    params = dict(query.params)
    for _ in range(DEEP_PAGE - 1):
        response = client.get(query.path, params=params, headers=credential)
        if response.status_code != 200:
            return None
        body = response.json()
        if "next_cursor" not in body:
            return {**query.params, "page": str(DEEP_PAGE)}, f"?page={DEEP_PAGE} (no cursors)"
        if not body["next_cursor"]:
            return None
        params = {**query.params, "cursor": body["next_cursor"]}
    return params, ""


# --- revocation ----------------------------------------------------------------------------------


def revocation(a: httpx.Client, b: httpx.Client, token: str) -> tuple[float, float]:
    """Sign out on A; return (sign-out ms, ms from sending it until B refuses the token, inf: never)."""
    bearer = {"Authorization": f"Bearer {token}"}
    for client in (a, b):
        status = client.get(SESSION_USER, headers=bearer).status_code
        if status != 200:
            raise RuntimeError(f"a live token was refused ({status}) before its sign-out")
    started = time.perf_counter()
    response = a.post(SIGNOUT, headers=bearer)
    signed_out = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"sign-out failed: {response.status_code} {response.text[:200]}")
    while time.perf_counter() - started < GIVE_UP_SECONDS:
        status = b.get(SESSION_USER, headers=bearer).status_code
        if status == 401:
            return signed_out, (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"instance B answered {status} while polling")
        time.sleep(POLL_SECONDS)
    return signed_out, float("inf")


def revocations(a: httpx.Client, b: httpx.Client, tokens: list[str], prefix: str, column: Column) -> None:
    """Several samples, a random pause apart (so that they fall at random points of B's poll)."""
    signouts, delays = [], []
    for token in tokens:
        signout_ms, delay_ms = revocation(a, b, token)
        signouts.append(signout_ms)
        delays.append(delay_ms)
        time.sleep(random.uniform(0.1, 0.6))
    column[f"{prefix}_signout"] = statistics.median(signouts)
    column[f"{prefix}_delay"] = statistics.median(delays)
    column[f"{prefix}_delay_max"] = max(delays)


# --- load ----------------------------------------------------------------------------------------


def token_file(workdir: Path, name: str, tokens: list[str]) -> Path:
    """The tokens wrk rotates through, one a line (0600, inside the temporary directory)."""
    if not all(_TOKEN_FORM.match(token) for token in tokens):
        raise ValueError("a token is not a compact JWT; refusing to hand it to the Lua script")
    path = workdir / name
    path.touch(mode=0o600)
    path.write_text("\n".join(tokens) + "\n")
    return path


def wrk_command(url: str, tokens: Path, connections: int, duration: float, script: Path) -> list[str]:
    """`wrk -t1` with the rotating Lua script."""
    return [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
        "--",
        str(tokens),
    ]


def wrk_run(url: str, tokens: Path, connections: int, duration: float, script: Path) -> harness.WrkResult:
    """One bounded wrk run."""
    done = subprocess.run(
        wrk_command(url, tokens, connections, duration, script),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return harness.parse_wrk(done.stdout)


@contextlib.contextmanager
def background_load(url: str, tokens: Path, connections: int, script: Path) -> Iterator[None]:
    """wrk against `url` for as long as the block runs (at most 120 s), stopped by its pid."""
    command = wrk_command(url, tokens, connections, 120, script)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let it reach a steady state
        yield
    finally:
        harness.stop_process(process)


# --- one size on one database --------------------------------------------------------------------


@dataclass(frozen=True)
class LoadFiles:
    """The wrk script and the two token files (0600, in the temporary directory)."""

    script: Path
    one: Path
    many: Path


def load_files(workdir: Path, fixture: Fixture) -> LoadFiles:
    """Write the rotating Lua script and the token files."""
    script = workdir / "rotate.lua"
    script.write_text(ROTATE_LUA)
    one = token_file(workdir, "one.txt", fixture.load_tokens[:1])
    return LoadFiles(script, one, token_file(workdir, "many.txt", fixture.load_tokens))


def measure(size: Size, database: str, args: argparse.Namespace, workdir: Path, notes: list[str]) -> Column:
    """Create and populate the database, then measure the servers on it; drop it on the way out."""
    secret = secrets.token_urlsafe(48)
    target = (
        sqlite_database(workdir)
        if database == "sqlite"
        else postgres_database(args.postgres_url, f"wg_scale_{size.name}")
    )
    with target as database_url:
        upgrade_schema(database_url, workdir / "migrate", secret)
        started = time.perf_counter()
        fixture = populate(database_url, size, secret, args.tokens)
        column: Column = {"populate_s": time.perf_counter() - started}
        column.update(users=size.users, events=size.events, tokens=len(fixture.load_tokens))
        print(f"  populated in {column['populate_s']:.0f} s; measuring", flush=True)
        engine = create_engine(database_url)
        try:
            column["sessions"] = inserted = session_rows(engine)
            files = load_files(workdir, fixture)
            with running_server(workdir / "a", database_url, secret) as a:
                column["start_s"] = a.start_s
                column["rss_start"], column["hwm_start"] = memory_mb(a.process.pid)
                with running_server(workdir / "b", database_url, secret) as b:
                    column["start_b_s"] = b.start_s
                    column["settle_s"] = settle(engine)
                    column["sessions_now"] = remaining = session_rows(engine)
                    column["pruned"] = inserted - remaining
                    if column["settle_s"] is None:
                        left = session_rows(engine, expired_before=int(time.time()) - EXPIRED_GRACE)
                        notes.append(
                            f"housekeeping left {left:,} expired sessions after {SETTLE_SECONDS:.0f} s; "
                            "measured with them in place"
                        )
                    measure_pair(a.base_url, b.base_url, fixture, files, args, column, notes)
                column["rss_end"], column["hwm_end"] = memory_mb(a.process.pid)
        finally:
            engine.dispose()
    return column


def measure_pair(
    a_url: str,
    b_url: str,
    fixture: Fixture,
    files: LoadFiles,
    args: argparse.Namespace,
    column: Column,
    notes: list[str],
) -> None:
    """Queries, then revocations idle, the two loads, and revocations under the many-token load."""
    with api_client(a_url) as a, api_client(b_url) as b:
        for query in queries(fixture):
            column[query.key], note = time_query(a, query, fixture)
            if note:
                notes.append(f"{query.key}: {note}")
        idle = fixture.revocation_tokens[: args.revocations]
        loaded = fixture.revocation_tokens[-args.revocations :]
        revocations(a, b, idle, "rev_idle", column)
        measure_load(a_url + SESSION_USER, files, args, column)
        with background_load(a_url + SESSION_USER, files.many, args.connections, files.script):
            revocations(a, b, loaded, "rev_load", column)


def measure_load(url: str, files: LoadFiles, args: argparse.Namespace, column: Column) -> None:
    """One token vs many distinct tokens, each after a warm-up, with the same wrk script."""
    warm = max(1.0, args.duration / 4)
    errors = 0
    for name, tokens in (("one", files.one), ("many", files.many)):
        wrk_run(url, tokens, args.connections, warm, files.script)
        result = wrk_run(url, tokens, args.connections, args.duration, files.script)
        column[f"{name}_rps"], column[f"{name}_p99"] = result.requests_per_s, result.p99_ms
        errors += result.errors
    column["load_errors"] = errors
    column["many_one"] = (column["many_rps"] or 0) / (column["one_rps"] or 1)


# --- the report ----------------------------------------------------------------------------------

ROWS = (
    ("users", "users"),
    ("sessions", "sessions (rows inserted)"),
    ("events", "audit events"),
    ("tokens", "distinct tokens in the load (N)"),
    ("populate_s", "populate, s"),
    ("start_s", "start A to /health 200, s"),
    ("start_b_s", "start B (A running), s"),
    ("rss_start", "A VmRSS after start, MB"),
    ("hwm_start", "A VmHWM after start, MB"),
    ("pruned", "expired sessions pruned after start"),
    ("settle_s", "  until all were pruned, s"),
    ("sessions_now", "sessions when measured"),
    ("q_users", "ms users ?limit=50"),
    ("q_users_query", "ms users ?query=<email prefix>"),
    ("q_users_pending", "ms users ?role=pending"),
    ("q_users_deep", f"ms users page {DEEP_PAGE}"),
    ("q_audit", "ms audit ?limit=50"),
    ("q_audit_event", "ms audit ?event=auth.signin"),
    ("q_audit_actor", "ms audit ?actor=<email>"),
    ("q_audit_subject", "ms audit ?subject=<email>"),
    ("q_audit_deep", f"ms audit page {DEEP_PAGE}"),
    ("q_admin_page", "ms GET /admin (cookie)"),
    ("q_account_page", "ms GET /account (1,000 sessions)"),
    ("q_sessions", "ms auths/sessions?limit=50 (1,000)"),
    ("one_rps", "GET /auths/ 1 token, req/s"),
    ("one_p99", "  p99 ms"),
    ("many_rps", "GET /auths/ N tokens, req/s"),
    ("many_p99", "  p99 ms"),
    ("many_one", f"req/s many/one (goal >= {GOAL_MANY_ONE})"),
    ("load_errors", "load errors (non-2xx, socket)"),
    ("rev_idle_signout", "sign-out on A, idle, ms"),
    ("rev_idle_delay", "sign-out -> 401 on B, idle, ms"),
    ("rev_idle_delay_max", "  max ms"),
    ("rev_load_signout", "sign-out on A, N-token load, ms"),
    ("rev_load_delay", "sign-out -> 401 on B, load, ms"),
    ("rev_load_delay_max", "  max ms"),
    ("rss_end", "A VmRSS at the end, MB"),
    ("hwm_end", "A VmHWM at the end (peak), MB"),
)
LABEL_WIDTH, CELL_WIDTH = 36, 9


def cell(value: float | None) -> str:
    """A number, compact: thousands grouped, fewer decimals as it grows; n/a, never."""
    if value is None:
        return "n/a"
    if value == float("inf"):
        return "never"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def ratio(values: list[float | None]) -> str:
    """Largest size over smallest, when both are positive finite numbers."""
    first, last = values[0], values[-1]
    if len(values) < 2 or not first or not last or float("inf") in (first, last) or first < 0:
        return ""
    return f"x{last / first:.2g}" if last / first < 10 else f"x{last / first:.0f}"


def print_table(results: dict[str, dict[str, Column]], sizes: list[Size]) -> None:
    """One row per metric; per database a column per size and the ratio largest/smallest size."""
    group = len(sizes) * (CELL_WIDTH + 1) + 7
    print(f"{'':<{LABEL_WIDTH}}" + "".join(f"  {' ' + database + ' ':-^{group - 2}}" for database in results))
    names = "".join(f"{s.name:>{CELL_WIDTH + 1}}" for s in sizes) + f"{'ratio':>7}"
    print(f"{'':<{LABEL_WIDTH}}" + names * len(results))
    for key, label in ROWS:
        line = f"{label:<{LABEL_WIDTH}}"
        for columns in results.values():
            values = [columns.get(s.name, {}).get(key) for s in sizes]
            line += "".join(f"{cell(v):>{CELL_WIDTH + 1}}" for v in values) + f"{ratio(values):>7}"
        print(line)


def print_verdicts(results: dict[str, dict[str, Column]], sizes: list[Size]) -> None:
    """The issue's one numeric goal, many/one >= 0.8, per column."""
    verdicts = []
    for database, columns in results.items():
        for size in sizes:
            value = columns.get(size.name, {}).get("many_one")
            if value is not None:
                verdict = "PASS" if value >= GOAL_MANY_ONE else "MISS"
                verdicts.append(f"{database} {size.name} {value:.3f} {verdict}")
    print(f"many/one >= {GOAL_MANY_ONE}: " + ", ".join(verdicts))


def describe(args: argparse.Namespace, databases: list[str]) -> None:
    """What is measured with what, so that two runs can be compared honestly."""
    cores = len(os.sched_getaffinity(0))
    print(f"wardgate scale: {', '.join(databases)}; sizes {args.sizes}; {cores} cores; loopback only")
    print(
        f"load: wrk -t1 -c{args.connections}, {args.duration:g} s per run after a warm-up, Lua rotation "
        f"of 1 or N tokens; {args.revocations} revocation samples per phase, B polled every "
        f"{POLL_SECONDS * 1000:.0f} ms; queries: median of {QUERY_REPEATS}"
    )


# --- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (--quick: sizes 1k,10k, 3 s loads, 3 revocations per phase)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", help="comma-separated presets: 1k,10k,100k (the default)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1k,10k and 3 s loads")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 10; quick 3)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--revocations", type=int, help="samples per phase, 1..20 (default 5; quick 3)")
    parser.add_argument(
        "--tokens", type=int, default=MAX_TOKENS, help=f"distinct tokens at most (default {MAX_TOKENS:,})"
    )
    parser.add_argument("--databases", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("WARDGATE_TEST_POSTGRES_URL"),
        help="a PostgreSQL server's admin URL (default: $WARDGATE_TEST_POSTGRES_URL)",
    )
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ("1k,10k" if args.quick else "1k,10k,100k")
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.revocations = args.revocations or (3 if args.quick else 5)
    unknown = [name for name in args.sizes.split(",") if name not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {list(SIZES)}")
    if not 1 <= args.revocations <= HEAVY_MINTED // 2:
        parser.error(f"--revocations must be 1..{HEAVY_MINTED // 2}")
    if args.duration < 1 or args.connections < 1 or args.tokens < 1:
        parser.error("--duration, --connections and --tokens must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    """Every size on every database, one after the other; then the table."""
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)")
    databases = [
        d for d in args.databases.split(",") if d == "sqlite" or (d == "postgres" and args.postgres_url)
    ]
    if "postgres" in args.databases and not args.postgres_url:
        print("no PostgreSQL: pass --postgres-url or set WARDGATE_TEST_POSTGRES_URL")
    sizes = [SIZES[name] for name in args.sizes.split(",")]
    describe(args, databases)
    results: dict[str, dict[str, Column]] = {d: {} for d in databases}
    notes: list[str] = []
    began = time.monotonic()
    for database in databases:
        for size in sizes:
            print(
                f"{database} {size.name}: {size.users:,} users, {size.sessions:,} sessions, "
                f"{size.events:,} events",
                flush=True,
            )
            found: list[str] = []
            with tempfile.TemporaryDirectory(prefix="wardgate-scale-") as tmp:
                try:
                    results[database][size.name] = measure(size, database, args, Path(tmp), found)
                except (RuntimeError, subprocess.TimeoutExpired, httpx.HTTPError, SQLAlchemyError) as exc:
                    found.append(f"failed: {type(exc).__name__}: {str(exc)[:300]}")
            notes += [f"{database} {size.name}: {note}" for note in found]
    print(f"\n(run took {time.monotonic() - began:.0f} s)\n")
    print_table(results, sizes)
    print()
    print_verdicts(results, sizes)
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
