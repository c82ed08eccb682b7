"""Three `wardgate serve` processes on one PostgreSQL and one Redis: the supported scale-out path, proven.

- all three start at the same moment on an empty database (migrations take turns);
- a sign-out on one instance is refused by the other two within 100 ms (Redis pub/sub);
- wrong passwords spread over the instances hit the limit exactly as on one instance;
- with Redis stopped, no revoked token is accepted anywhere (the database is read instead) and
  limits still apply per instance; with Redis back, everything returns to shared mode on its own;
- after restarting all three, every revocation still holds.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import PASSWORD
from tests.scaleout.conftest import Cluster
from tests.scaleout.harness import wait_for
from wardgate.storage import schema

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

SIGNIN = "/api/v1/auths/signin"
SESSION = "/api/v1/auths/"
WRONG = "not-the-password-1"
NAMES = ("A", "B", "C")
PROPAGATION_BUDGET = 0.100  # seconds, the figure
REVOKED = {"detail": "This session has ended. Please sign in again."}
INCORRECT = {
    "detail": "The email or password provided is incorrect. Please check for typos and try signing in again."
}
DEGRADED = "memory (redis unavailable)"
HEALTHY = {
    "status": True,
    "database": "ok",
    "sessions": "synchronised",
    "rate_limits": "redis",
    "revocation_channel": "connected",
}
_ips = (f"198.18.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def new_ip() -> str:
    """A client address no other step has used (so no step inherits another's counters)."""
    return next(_ips)


def via(ip: str, token: str | None = None) -> dict[str, str]:
    """Headers of a request forwarded by the loopback proxy for client `ip`, with a Bearer token."""
    headers = {"X-Forwarded-For": ip}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def signup(client: httpx.Client, email: str) -> str:
    """Create an account; return its token."""
    body = {"name": "Someone", "email": email, "password": PASSWORD}
    response = client.post("/api/v1/auths/signup", json=body, headers=via(new_ip()))
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def signin(client: httpx.Client, email: str, password: str, ip: str) -> httpx.Response:
    """POST /signin for client `ip`."""
    return client.post(SIGNIN, json={"email": email, "password": password}, headers=via(ip))


def signin_token(client: httpx.Client, email: str) -> str:
    """A successful sign-in's token."""
    response = signin(client, email, PASSWORD, new_ip())
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def session_status(client: httpx.Client, token: str) -> int:
    """The status of GET /api/v1/auths/ with `token`; a refusal must be the revoked one."""
    # A fresh client IP each time: AUTH_FAILURE_RATE_LIMIT (per IP) must not turn 401 into 429 here.
    response = client.get(SESSION, headers=via(new_ip(), token))
    if response.status_code == 401:
        assert response.json() == REVOKED
    return response.status_code


def signout(client: httpx.Client, token: str) -> None:
    """Revoke a session on this instance."""
    response = client.post("/api/v1/auths/signout", headers=via(new_ip(), token))
    assert response.status_code == 200, response.text


def assert_limited(response: httpx.Response) -> None:
    """429 with Retry-After within SIGNIN_RATE_LIMIT's 3-minute window and a detail naming it."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 170 <= retry_after <= 181
    assert response.json() == {"detail": f"Too many attempts. Try again in {retry_after} seconds."}


def accepted_everywhere(cluster: Cluster, token: str) -> bool:
    """True when every instance accepts `token` (a new account reaches the others by a sync)."""
    return all(session_status(cluster[name], token) == 200 for name in NAMES)


def refusal_delays(cluster: Cluster, token: str, names: list[str], since: float) -> dict[str, float]:
    """Poll the instances in parallel every 2 ms until each refuses `token`; seconds after `since`."""

    def poll(name: str) -> float:
        while True:
            status = session_status(cluster[name], token)
            now = time.perf_counter()
            if status == 401:
                return now - since
            assert status == 200
            assert now - since < 2.0, f"instance {name} still accepts the revoked token after 2 s"
            time.sleep(0.002)

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(poll, names), strict=True))


def ready(cluster: Cluster) -> dict[str, dict[str, Any]]:
    """/health?ready=true of every instance."""
    return {name: cluster[name].get("/health?ready=true").json() for name in NAMES}


def all_ready(cluster: Cluster, predicate: Callable[[dict[str, Any]], bool]) -> bool:
    """True when every instance's readiness body satisfies `predicate`."""
    return all(predicate(body) for body in ready(cluster).values())


# --- the tests --------------------------------------------------------------------------------------


def test_three_instances_started_together_migrate_one_fresh_database(cluster: Cluster) -> None:
    wait_for(lambda: all_ready(cluster, lambda b: b == HEALTHY), timeout=10, what="all three ready")
    engine = create_engine(cluster.database_url)
    try:
        with engine.connect() as connection:
            versions = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
            users = connection.execute(text("SELECT count(*) FROM users")).scalar_one()
    finally:
        engine.dispose()
    assert versions == [schema.head()]  # one linear chain, applied once
    assert users == 0
    for instance in cluster.instances:
        assert "Traceback" not in instance.log_path.read_text(errors="replace"), instance.log_tail()


class Notices:
    """Arrival times of the "sync now" notices on the revocation channel (evidence when a test fails)."""

    def __init__(self, cluster: Cluster) -> None:
        self._pubsub = cluster.redis.client().pubsub()
        self._pubsub.subscribe("wardgate:auth:changes")
        self.times: list[float] = []
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        with contextlib.suppress(redis.RedisError, ValueError):
            for message in self._pubsub.listen():
                if message["type"] == "message":
                    self.times.append(time.perf_counter())

    def after(self, since: float) -> list[float]:
        """Milliseconds from `since` to the notices around it (the sign-out's arrives just before)."""
        return [round((t - since) * 1000, 1) for t in self.times if -0.05 < t - since < 1]

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(redis.RedisError):
            self._pubsub.close()
        self._thread.join(timeout=2)


def assert_propagated(delays: list[float], evidence: list[str]) -> None:
    """All but one refusal in ten (at least one allowed) within 100 ms, and every one within 1 s.

    Wall-clock figures on a shared two-core machine: one sample can lose the CPU for a while (the
    evidence then shows its notice delivered in time and applied late). The mechanism is what is
    proven: with the poll at 5 s (SESSION_SYNC_INTERVAL), a broken channel would put most samples
    near seconds, and the 1 s ceiling would fail.
    """
    ordered = sorted(delays)
    late = [d for d in ordered if d >= PROPAGATION_BUDGET]
    assert len(late) <= max(1, len(ordered) // 10), "\n".join(evidence)
    assert ordered[-1] < 1.0, "\n".join(evidence)


def test_a_signout_on_b_is_refused_by_a_and_c_within_100_ms(cluster: Cluster) -> None:
    signup(cluster["A"], "propagation@example.com")
    notices = Notices(cluster)
    rounds: list[str] = []
    delays: list[float] = []
    try:
        for signin_on, signout_on in [("A", "B"), ("B", "C"), ("C", "A")] * 3:
            token = signin_token(cluster[signin_on], "propagation@example.com")
            wait_for(lambda t=token: accepted_everywhere(cluster, t), timeout=2, what="accepted everywhere")
            signout(cluster[signout_on], token)
            since = time.perf_counter()  # the sign-out has been answered: the revocation is committed
            cluster.revoked.append(token)
            others = [n for n in NAMES if n != signout_on]
            measured = refusal_delays(cluster, token, others, since=since)
            delays.extend(measured.values())
            assert session_status(cluster[signout_on], token) == 401
            shown = {name: round(delay * 1000, 1) for name, delay in measured.items()}
            rounds.append(
                f"out on {signout_on}: refused after {shown} ms, notice at {notices.after(since)} ms"
            )
    finally:
        notices.close()
    assert_propagated(delays, rounds)


def test_wrong_passwords_spread_over_the_instances_hit_one_shared_limit(cluster: Cluster) -> None:
    signup(cluster["B"], "spread@example.com")
    attacker = new_ip()
    for name in ["A", "B", "C", "A", "B"]:  # SIGNIN_RATE_LIMIT=5/3m, shared through Redis
        response = signin(cluster[name], "spread@example.com", WRONG, attacker)
        assert (response.status_code, response.json()) == (400, INCORRECT)
    for name in NAMES:
        assert_limited(signin(cluster[name], "spread@example.com", WRONG, attacker))
        assert_limited(signin(cluster[name], "spread@example.com", PASSWORD, attacker))
    owner = new_ip()
    for name in NAMES:  # no lock-out of the owner on another IP, on any instance
        assert signin(cluster[name], "spread@example.com", PASSWORD, owner).status_code == 200


def test_redis_outage_fails_closed_then_recovers_and_restart_keeps_every_revocation(cluster: Cluster) -> None:
    signup(cluster["A"], "outage@example.com")
    signup(cluster["B"], "everywhere@example.com")
    survivor = signin_token(cluster["C"], "outage@example.com")  # never revoked: must survive it all
    everywhere = signin_token(cluster["A"], "everywhere@example.com")
    wait_for(lambda: accepted_everywhere(cluster, everywhere), timeout=2, what="accepted everywhere")

    cluster.redis.stop()
    try:
        wait_for(
            lambda: all_ready(
                cluster, lambda b: b["revocation_channel"] == "disconnected" and b["sessions"] == "stale"
            ),
            timeout=5,
            what="every instance to notice that Redis is gone",
        )
        # A session revoked on A is refused by B and C at once: they read the database now.
        token = signin_token(cluster["A"], "outage@example.com")
        assert accepted_everywhere(cluster, token)
        signout(cluster["A"], token)
        cluster.revoked.append(token)
        assert [session_status(cluster[n], token) for n in NAMES] == [401, 401, 401]
        # "Sign out everywhere" on C (a user-wide change) likewise.
        response = cluster["C"].post("/api/v1/auths/sessions/revoke", headers=via(new_ip(), everywhere))
        assert response.status_code == 200, response.text
        cluster.revoked.append(everywhere)
        assert [session_status(cluster[n], everywhere) for n in NAMES] == [401, 401, 401]
        assert [session_status(cluster[n], survivor) for n in NAMES] == [200, 200, 200]

        # Limits still apply, per instance: five attempts on each, then 429 — never unlimited.
        attacker = new_ip()
        for name in NAMES:
            for _ in range(5):
                response = signin(cluster[name], "outage@example.com", WRONG, attacker)
                assert (response.status_code, response.json()) == (400, INCORRECT)
            assert_limited(signin(cluster[name], "outage@example.com", WRONG, attacker))
        for name, body in ready(cluster).items():
            assert body == {
                **HEALTHY,
                "sessions": "stale",
                "rate_limits": DEGRADED,
                "revocation_channel": "disconnected",
            }, name
    finally:
        cluster.redis.start()  # same port, empty

    wait_for(
        lambda: all_ready(
            cluster, lambda b: b["revocation_channel"] == "connected" and b["sessions"] == "synchronised"
        ),
        timeout=8,
        what="every instance to resubscribe and resynchronise",
    )

    # The limiter retries Redis (every 5 s) when it is used: sign-in traffic brings it back.
    def limits_back_on_redis() -> bool:
        for name in NAMES:
            response = signin(cluster[name], "nobody@example.com", WRONG, new_ip())
            assert response.status_code == 400, response.text
        return all_ready(cluster, lambda b: b["rate_limits"] == "redis")

    wait_for(limits_back_on_redis, timeout=10, interval=0.5, what="rate limits back on Redis")
    assert ready(cluster) == dict.fromkeys(NAMES, HEALTHY)

    # Shared mode again: fast propagation and one limit across the instances.
    delays: list[float] = []
    for _ in range(3):
        token = signin_token(cluster["A"], "outage@example.com")
        wait_for(lambda t=token: accepted_everywhere(cluster, t), timeout=2, what="accepted everywhere")
        signout(cluster["B"], token)
        cluster.revoked.append(token)
        delays.extend(refusal_delays(cluster, token, ["A", "C"], since=time.perf_counter()).values())
    assert_propagated(delays, [f"after recovery (ms): {[round(d * 1000, 1) for d in delays]}"])
    attacker = new_ip()
    for name in ["C", "B", "A", "C", "B"]:
        assert signin(cluster[name], "outage@example.com", WRONG, attacker).status_code == 400
    for name in NAMES:
        assert_limited(signin(cluster[name], "outage@example.com", WRONG, attacker))

    # Restart all three: the revocations live in the database, not in any process or in Redis.
    cluster.restart()
    wait_for(lambda: all_ready(cluster, lambda b: b == HEALTHY), timeout=10, what="all three ready again")
    assert len(cluster.revoked) >= 3
    for revoked in cluster.revoked:
        assert [session_status(cluster[n], revoked) for n in NAMES] == [401, 401, 401]
    assert [session_status(cluster[n], survivor) for n in NAMES] == [200, 200, 200]


def test_a_database_blip_does_not_silence_the_revocation_channel(cluster: Cluster) -> None:
    # A notice arriving while the database is briefly unreachable makes its sync fail. That must
    # cost one sync, not the subscription: afterwards sign-outs must still propagate in
    # milliseconds, not only by the poll (5 s here), and /health must not report a dead channel
    # as "connected".
    signup(cluster["A"], "blip@example.com")
    name = cluster.database_url.rsplit("/", 1)[1]
    admin = create_engine(cluster.database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
        with contextlib.closing(cluster.redis.client()) as client:
            client.publish("wardgate:auth:changes", "sync")  # what any instance sends on a change
        time.sleep(0.5)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    wait_for(lambda: all_ready(cluster, lambda b: b == HEALTHY), timeout=10, what="all three ready again")

    delays: list[float] = []
    for _ in range(3):
        token = signin_token(cluster["A"], "blip@example.com")
        wait_for(lambda t=token: accepted_everywhere(cluster, t), timeout=2, what="accepted everywhere")
        signout(cluster["B"], token)
        cluster.revoked.append(token)
        delays.extend(refusal_delays(cluster, token, ["A", "C"], since=time.perf_counter()).values())
    assert_propagated(delays, [f"after a database blip (ms): {[round(d * 1000, 1) for d in delays]}"])
