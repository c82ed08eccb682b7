"""Anonymous floods cannot fill the disk of a real `wardgate serve`: refusals are counted, not stored
one by one; attacker text is not stored as a subject; an account's sessions are bounded; old events and
expired sessions are pruned while it runs."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.servers import wardgate_process
from wardgate.storage import db, schema

pytestmark = pytest.mark.slow
SIGNUP = "/api/v1/auths/signup"
SIGNIN = "/api/v1/auths/signin"
ATTACKER = {"x-forwarded-for": "198.51.100.66"}  # loopback is the trusted proxy


def _query(database: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as connection:
        return list(connection.execute(sql, args))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "MAX_SESSIONS_PER_USER": "3"}
    with wardgate_process(env) as base:
        owner = httpx.post(
            f"{base}{SIGNUP}",
            json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD},
            headers={"origin": base},
        )
        assert owner.status_code == 200, owner.text
        yield base, tmp_path / "wardgate.db"


def test_a_signup_flood_costs_a_few_rows_not_one_per_request(site: tuple[str, Path]) -> None:
    """Measured before: 2,000 sign-ups from one client wrote 3,982 rows (about 100 GB a day at 329 req/s)."""
    base, database = site
    before = _query(database, "SELECT count(*) FROM audit_events")[0][0]
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base, headers={"origin": base, **ATTACKER, "user-agent": "U" * 512}) as client:
        for i in range(1500):
            body = {
                "name": "Mallory",
                "email": f"m{i}-{uuid.uuid4().hex[:6]}@example.com",
                "password": PASSWORD,
            }
            status = client.post(SIGNUP, json=body).status_code
            statuses[status] = statuses.get(status, 0) + 1
    assert statuses[429] >= 1480, statuses  # SIGNUP_RATE_LIMIT: 10 an hour
    deadline = time.monotonic() + 10  # the counts are written every SESSION_SYNC_INTERVAL
    while True:
        added = _query(database, "SELECT event, outcome, count FROM audit_events")[before:]
        tripped = [count for event, _, count in added if event == "ratelimit.tripped"]
        if sum(tripped) == statuses[429] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(tripped) == statuses[429]  # every refusal is still counted
    assert len(added) <= 2 * statuses[200] + 2, added  # the sign-ups themselves, and one row per window
    longest = _query(database, "SELECT max(length(user_agent)) FROM audit_events")[0][0]
    assert longest == 256


def test_attacker_text_is_not_stored_as_a_subject(site: tuple[str, Path]) -> None:
    base, database = site
    bait = "Call +1-555-0100 to unlock your account"
    with httpx.Client(base_url=base, headers={"origin": base, **ATTACKER}) as client:
        assert client.post(SIGNIN, json={"email": bait, "password": "x"}).status_code == 400
        assert client.post(SIGNIN, json={"email": "nobody@example.com", "password": "x"}).status_code == 400
        assert client.post(SIGNIN, json={"email": "ada@example.com", "password": "x"}).status_code == 400
        assert client.post(SIGNUP, json={"name": "M", "email": bait, "password": PASSWORD}).status_code == 400
    subjects = _query(
        database,
        "SELECT event, subject FROM audit_events"
        " WHERE event LIKE 'auth.%' AND outcome = 'failure' ORDER BY id",
    )
    assert subjects == [
        ("auth.signin", None),  # not an address
        ("auth.signin", None),  # an address, but no account
        ("auth.signin", "ada@example.com"),  # a known account
        ("auth.signup", None),  # not an address
    ]


def test_an_account_signing_in_in_a_loop_holds_a_bounded_number_of_sessions(site: tuple[str, Path]) -> None:
    """MAX_SESSIONS_PER_USER=3: the oldest end first; ten times as many ended ones stop new sign-ins."""
    base, database = site
    with httpx.Client(base_url=base, headers={"origin": base}) as client:
        pending = client.post(SIGNUP, json={"name": "Pat", "email": "pat@example.com", "password": PASSWORD})
        assert pending.status_code == 200, pending.text
        client.cookies.clear()
        tokens = [pending.json()["token"]]
        statuses = []
        for _ in range(40):
            response = client.post(SIGNIN, json={"email": "pat@example.com", "password": PASSWORD})
            client.cookies.clear()
            statuses.append(response.status_code)
            if response.status_code == 200:
                tokens.append(response.json()["token"])
        assert statuses[:32] == [200] * 32 and set(statuses[32:]) == {429}, statuses
        live = [
            client.get("/api/v1/auths/", headers={"authorization": f"Bearer {t}"}).status_code for t in tokens
        ]
        # Three live, the newest among them (sessions started within one second are ordered arbitrarily).
        assert sorted(live) == [200] * 3 + [401] * (len(tokens) - 3) and live[-1] == 200
    (user_id,) = _query(database, "SELECT id FROM users WHERE email = 'pat@example.com'")[0]
    rows = _query(database, "SELECT count(*) FROM auth_sessions WHERE user_id = ?", user_id)[0][0]
    assert rows == 33  # 3 live and 30 ended, whatever the loop tries next


def test_old_events_and_expired_sessions_are_pruned_while_it_runs(tmp_path: Path) -> None:
    database = tmp_path / "wardgate.db"
    engine = db.create_db_engine(f"sqlite:///{database}")
    schema.upgrade(engine)
    engine.dispose()
    now = int(time.time())
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO users (id, email, name, role, active, session_stamp, profile_image_url, created_at,"
            " updated_at) VALUES ('u1', 'old@example.com', 'Old', 'user', 1, 's', '/user.png', 0, 0)"
        )
        for age_days in (365, 31, 29):
            connection.execute(
                "INSERT INTO audit_events (at, event, outcome, count)"
                " VALUES (?, 'auth.signin', 'success', 1)",
                (now - age_days * 86400,),
            )
        for name, expires_at in (("expired", now - 3600), ("live", now + 3600), ("lasting", None)):
            connection.execute(
                "INSERT INTO auth_sessions (id, user_id, auth_method, created_at, expires_at, last_seen_at)"
                " VALUES (?, 'u1', 'password', 0, ?, 0)",
                (name, expires_at),
            )
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "AUDIT_RETENTION_DAYS": "30"}
    with wardgate_process(env):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # one run prunes both, one job after the other
            ages = _query(
                database, "SELECT (? - at) / 86400 FROM audit_events WHERE event = 'auth.signin'", now
            )
            sessions = _query(database, "SELECT id FROM auth_sessions ORDER BY id")
            if len(ages) == 1 and len(sessions) == 2:
                break
            time.sleep(0.5)
        assert ages == [(29,)]
        assert sessions == [("lasting",), ("live",)]


def _rss_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) // 1024


def test_failed_sign_ins_from_many_clients_do_not_grow_the_process(tmp_path: Path) -> None:
    """Each Argon2id verification allocates 19 MiB; glibc kept one copy per worker thread (measured:
    200 failed sign-ins from 16 clients took the process from 133 to 420 MiB, never given back)."""
    pids: list[int] = []
    with wardgate_process({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET}, pids=pids) as base:

        def guess(i: int) -> int:
            body = {"email": f"nobody{i}@example.com", "password": "guess"}
            headers = {"origin": base, "x-forwarded-for": f"203.0.113.{i % 200}"}
            return httpx.post(f"{base}{SIGNIN}", json=body, headers=headers, timeout=30).status_code

        guess(-1)
        before = _rss_mib(pids[0])
        with ThreadPoolExecutor(16) as pool:
            statuses = set(pool.map(guess, range(200)))
        assert statuses <= {400, 503}, statuses  # refused; 503 when PASSWORD_HASH_CONCURRENCY is busy
        assert _rss_mib(pids[0]) - before < 64
