"""Brute-force protection through the HTTP API: who is limited, by what key, and that it always holds.

Client IPs are simulated the way production sees them: requests arrive from a trusted proxy
(FORWARDED_ALLOW_IPS=10.0.0.1, the TestClient's peer address) carrying `X-Forwarded-For`. A second
client on the same application, from an untrusted peer, shows that forged headers change nothing.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient
from tests.conftest import ORIGIN, PASSWORD, REDIS_URL, bearer
from tests.scaleout.harness import PrivateRedis, free_port, wait_for
from tests.servers import SERVICES_HOW, service_missing

from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.http.application import build_application

PROXY = "10.0.0.1"
ATTACKER = "203.0.113.66"
OWNER_IP = "198.51.100.7"
WRONG = "not-the-password-1"
SIGNIN = "/api/v1/auths/signin"
SIGNUP = "/api/v1/auths/signup"
SESSION = "/api/v1/auths/"
INCORRECT = {
    "detail": "The email or password provided is incorrect. Please check for typos and try signing in again."
}
REVOKED = {"detail": "This session has ended. Please sign in again."}
BAD_TOKEN = {"detail": "Invalid or expired session token."}
BUSY = {"detail": "The server is busy checking passwords; try again in a moment."}
DEGRADED = "memory (redis unavailable)"
_WAIT = re.compile(r"^Too many attempts\. Try again in (\d+) seconds\.$")


class Site:
    """One wardgate application, reached through the trusted proxy (any client IP) or directly."""

    def __init__(self, gateway: Gateway, client: TestClient) -> None:
        self.gateway = gateway
        self.client = client

    def via(self, ip: str) -> dict[str, str]:
        """Headers of a request the trusted proxy forwards for client `ip`."""
        return {"X-Forwarded-For": ip}

    def signup(self, email: str, *, ip: str = OWNER_IP, password: str = PASSWORD) -> httpx.Response:
        """POST /signup from client `ip`."""
        body = {"name": "Someone", "email": email, "password": password}
        response = self.client.post(SIGNUP, json=body, headers=self.via(ip))
        self.client.cookies.clear()  # tokens travel explicitly in these tests
        return response

    def signin(self, email: str, password: str, *, ip: str) -> httpx.Response:
        """POST /signin from client `ip`."""
        response = self.client.post(SIGNIN, json={"email": email, "password": password}, headers=self.via(ip))
        self.client.cookies.clear()
        return response

    def session(self, token: str, *, ip: str) -> httpx.Response:
        """GET the session user with a Bearer token from client `ip`."""
        return self.client.get(SESSION, headers={**bearer(token), **self.via(ip)})

    def direct(self, peer: str) -> TestClient:
        """A client connecting from `peer` itself (not through the proxy), same application."""
        return TestClient(self.client.app, base_url=ORIGIN, headers={"origin": ORIGIN}, client=(peer, 5000))

    def ready(self) -> dict[str, Any]:
        """GET /health?ready=true (asserting 200)."""
        response = self.client.get("/health?ready=true")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def make_site(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Site]]:
    """Start an application behind the trusted proxy 10.0.0.1 (lifespan included); stopped afterwards."""
    clients: list[TestClient] = []

    def make(**overrides: str) -> Site:
        gateway = Gateway.build(make_settings(FORWARDED_ALLOW_IPS=PROXY, **overrides))
        client = TestClient(
            build_application(gateway), base_url=ORIGIN, headers={"origin": ORIGIN}, client=(PROXY, 4000)
        )
        client.__enter__()
        clients.append(client)
        return Site(gateway, client)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings for limits in process memory, and on the shared Redis under a unique prefix."""
    if request.param == "memory":
        yield {}
        return
    if not REDIS_URL:
        service_missing("Redis (WARDGATE_TEST_REDIS_URL)", SERVICES_HOW)
    prefix = f"wgtest-{uuid.uuid4().hex[:10]}"
    yield {"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": prefix}
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
    finally:
        client.close()


def assert_limited(response: httpx.Response, window: int) -> int:
    """429, `{"detail": ...}` naming the wait, `Retry-After` equal to it and within the window."""
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert response.json() == {"detail": f"Too many attempts. Try again in {retry_after} seconds."}
    assert window - 10 <= retry_after <= window + 1
    return retry_after


def assert_incorrect(response: httpx.Response) -> None:
    """The one answer for a wrong password or an unknown email."""
    assert response.status_code == 400, response.text
    assert response.json() == INCORRECT


def token_of(response: httpx.Response) -> str:
    """The session token of a successful sign-in or sign-up."""
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


# --- sign-in: per (account, IP) ------------------------------------------------------------------


def test_wrong_passwords_hit_429_after_exactly_the_signin_limit(
    make_site: Callable[..., Site], storage: dict[str, str]
) -> None:
    site = make_site(**storage)
    token_of(site.signup("owner@example.com"))
    for _ in range(5):  # SIGNIN_RATE_LIMIT=5/3m, the default
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=ATTACKER))
    assert_limited(site.signin("owner@example.com", WRONG, ip=ATTACKER), 180)
    # Refused before the password check: even the right password does not get through from there.
    assert_limited(site.signin("owner@example.com", PASSWORD, ip=ATTACKER), 180)
    # The email's case and spacing do not make a new key.
    assert_limited(site.signin("  OWNER@Example.com ", WRONG, ip=ATTACKER), 180)


def test_a_configured_signin_limit_is_the_one_applied(make_site: Callable[..., Site]) -> None:
    site = make_site(SIGNIN_RATE_LIMIT="2/90s")
    token_of(site.signup("owner@example.com"))
    for _ in range(2):
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=ATTACKER))
    assert_limited(site.signin("owner@example.com", WRONG, ip=ATTACKER), 90)


def test_an_attacker_cannot_lock_the_owner_out_from_another_ip(
    make_site: Callable[..., Site], storage: dict[str, str]
) -> None:
    site = make_site(**storage)
    token_of(site.signup("owner@example.com"))
    for _ in range(5):
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=ATTACKER))
    assert_limited(site.signin("owner@example.com", WRONG, ip=ATTACKER), 180)

    token = token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))
    assert site.session(token, ip=OWNER_IP).json()["email"] == "owner@example.com"
    # The owner's own typos have their own budget, untouched by the attacker's.
    for _ in range(5):
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=OWNER_IP))
    assert_limited(site.signin("owner@example.com", WRONG, ip=OWNER_IP), 180)


def test_a_successful_signin_clears_the_account_ip_counter(make_site: Callable[..., Site]) -> None:
    site = make_site()
    token_of(site.signup("owner@example.com"))
    for _ in range(4):
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=OWNER_IP))
    token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))
    for _ in range(5):  # a fresh budget of five, not one
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=OWNER_IP))
    assert_limited(site.signin("owner@example.com", WRONG, ip=OWNER_IP), 180)


def test_password_spraying_from_one_ip_is_stopped_across_accounts(make_site: Callable[..., Site]) -> None:
    site = make_site()  # SIGNIN_IP_RATE_LIMIT=20/3m failures per IP, the default
    for name in ("alice", "bob", "carol"):
        token_of(site.signup(f"{name}@example.com"))
    # One guess per account never reaches the per-account limit; the per-IP one stops it.
    emails = [f"{n}@example.com" for n in ("alice", "bob", "carol")] + [
        f"user{i}@example.com" for i in range(17)
    ]
    for email in emails:
        assert_incorrect(site.signin(email, WRONG, ip=ATTACKER))
    assert_limited(site.signin("dave@example.com", WRONG, ip=ATTACKER), 180)
    assert_limited(site.signin("alice@example.com", PASSWORD, ip=ATTACKER), 180)
    # Other clients are unaffected, the sprayed accounts included.
    token_of(site.signin("alice@example.com", PASSWORD, ip=OWNER_IP))
    assert_incorrect(site.signin("bob@example.com", WRONG, ip="198.51.100.8"))


def test_a_refused_sprayer_cannot_grow_the_limiter_with_made_up_accounts(
    make_site: Callable[..., Site],
) -> None:
    """Each account named got a bucket of its own, refused or not: a flood of made-up addresses grew
    the in-memory limiter without bound, and its expiry scan (every key, every 10 ms) stalled the
    process for everyone (bench/soak.py: honest p99 x12)."""
    site = make_site(SIGNIN_IP_RATE_LIMIT="3/3m")
    for i in range(3):
        assert_incorrect(site.signin(f"user{i}@example.com", WRONG, ip=ATTACKER))
    events = site.gateway.limiter._local.events  # the limits library's moving-window store
    keys = len(events)
    for i in range(200):
        assert_limited(site.signin(f"made-up-{i}@example.com", WRONG, ip=ATTACKER), 180)
    assert len(events) == keys


def test_successful_signins_do_not_count_against_the_ip_limit(make_site: Callable[..., Site]) -> None:
    site = make_site(SIGNIN_IP_RATE_LIMIT="3/3m")  # an office behind one NAT address
    token_of(site.signup("owner@example.com"))
    for _ in range(6):
        token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))
    for _ in range(3):
        assert_incorrect(site.signin("nobody@example.com", WRONG, ip=OWNER_IP))
    assert_limited(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP), 180)


# --- the identity used for limits -----------------------------------------------------------------


def test_forged_forwarded_for_from_an_untrusted_peer_does_not_change_the_identity(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    token_of(site.signup("owner@example.com"))
    untrusted = site.direct("192.0.2.50")  # not in FORWARDED_ALLOW_IPS
    body = {"email": "owner@example.com", "password": WRONG}
    for i in range(5):
        response = untrusted.post(SIGNIN, json=body, headers={"X-Forwarded-For": f"192.0.2.{100 + i}"})
        assert_incorrect(response)
    assert_limited(untrusted.post(SIGNIN, json=body, headers={"X-Forwarded-For": "192.0.2.200"}), 180)
    assert_limited(untrusted.post(SIGNIN, json=body, headers={"X-Real-IP": "192.0.2.201"}), 180)
    # Its budget was its own: a client behind the proxy still has all five attempts.
    assert_incorrect(site.signin("owner@example.com", WRONG, ip="192.0.2.200"))


def test_forged_entries_left_of_the_proxys_own_do_not_change_the_identity(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    token_of(site.signup("owner@example.com"))
    for i in range(5):  # the proxy appends the real client; whatever the client wrote is left of it
        headers = {"X-Forwarded-For": f"10.9.9.{i}, {ATTACKER}"}
        assert_incorrect(
            site.client.post(SIGNIN, json={"email": "owner@example.com", "password": WRONG}, headers=headers)
        )
    assert_limited(site.signin("owner@example.com", WRONG, ip=f"10.9.9.9, {ATTACKER}"), 180)
    assert_limited(site.signin("owner@example.com", WRONG, ip=ATTACKER), 180)


# --- sign-up, password change, bad tokens ----------------------------------------------------------


def test_signup_is_limited_per_ip(make_site: Callable[..., Site]) -> None:
    site = make_site(SIGNUP_RATE_LIMIT="3/1h")
    token_of(site.signup("a@example.com", ip=ATTACKER))
    token_of(site.signup("b@example.com", ip=ATTACKER))
    refused = site.signup("a@example.com", ip=ATTACKER)  # refused attempts count too
    assert (refused.status_code, refused.json()) == (400, {"detail": "This email is already registered."})
    assert_limited(site.signup("c@example.com", ip=ATTACKER), 3600)
    token_of(site.signup("c@example.com", ip=OWNER_IP))


def test_password_change_is_limited_per_account(make_site: Callable[..., Site]) -> None:
    site = make_site(PASSWORD_CHANGE_RATE_LIMIT="2/15m")
    token = token_of(site.signup("owner@example.com"))
    change = {"password": WRONG, "new_password": "a-new-password-123"}
    for ip in ("198.51.100.1", "198.51.100.2"):
        response = site.client.post(
            "/api/v1/auths/update/password", json=change, headers={**bearer(token), **site.via(ip)}
        )
        assert (response.status_code, response.json()) == (
            400,
            {"detail": "The current password is incorrect."},
        )
    # Per account, whatever the IP: a stolen token cannot grind through current passwords.
    right = {"password": PASSWORD, "new_password": "a-new-password-123"}
    response = site.client.post(
        "/api/v1/auths/update/password", json=right, headers={**bearer(token), **site.via("198.51.100.3")}
    )
    assert_limited(response, 900)
    # Nothing changed: the session and the old password still work.
    assert site.session(token, ip=OWNER_IP).status_code == 200
    token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))


def test_repeated_bad_tokens_from_one_ip_get_429(make_site: Callable[..., Site]) -> None:
    site = make_site(AUTH_FAILURE_RATE_LIMIT="3/1m")
    first = token_of(site.signup("owner@example.com"))
    live = token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))
    response = site.client.post("/api/v1/auths/signout", headers=bearer(first))
    assert response.status_code == 200, response.text
    for _ in range(2):
        response = site.session("forged.jwt.value", ip=ATTACKER)
        assert (response.status_code, response.json()) == (401, BAD_TOKEN)
    response = site.session(first, ip=ATTACKER)  # authentic but signed out: not an attack, not counted
    assert (response.status_code, response.json()) == (401, REVOKED)
    response = site.session("forged.jwt.value", ip=ATTACKER)  # the third forgery
    assert (response.status_code, response.json()) == (401, BAD_TOKEN)
    assert_limited(site.session("forged.jwt.value", ip=ATTACKER), 60)
    # Whoever still holds the signed-out token is told to sign in again, never to wait.
    response = site.session(first, ip=ATTACKER)
    assert (response.status_code, response.json()) == (401, REVOKED)
    # Valid tokens are never counted or refused, and other IPs keep their own budget.
    assert site.session(live, ip=ATTACKER).status_code == 200
    response = site.session("forged.jwt.value", ip=OWNER_IP)
    assert (response.status_code, response.json()) == (401, BAD_TOKEN)


# --- concurrency --------------------------------------------------------------------------------


def _at_once(count: int, request: Callable[[int], httpx.Response]) -> Counter[int]:
    """Send `count` requests released together by a barrier; return how many got each status."""
    barrier = threading.Barrier(count)

    def one(index: int) -> httpx.Response:
        barrier.wait(timeout=30)
        return request(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        responses = list(pool.map(one, range(count)))
    for response in responses:
        assert response.json()["detail"], response.text
    return Counter(response.status_code for response in responses)


def test_fifty_simultaneous_wrong_passwords_reach_the_password_check_exactly_five_times(
    make_site: Callable[..., Site], storage: dict[str, str]
) -> None:
    site = make_site(**storage, PASSWORD_HASH_CONCURRENCY="8")
    token_of(site.signup("owner@example.com"))
    body = {"email": "owner@example.com", "password": WRONG}
    statuses = _at_once(50, lambda _i: site.client.post(SIGNIN, json=body, headers=site.via(ATTACKER)))
    # 400 "incorrect" is only ever answered after the password check; 429 before it.
    assert statuses == Counter({400: 5, 429: 45})


def test_simultaneous_spraying_from_one_ip_stays_within_the_ip_limit(make_site: Callable[..., Site]) -> None:
    # SIGNIN_IP_RATE_LIMIT is a count of failures, so a burst sent before any failure is recorded
    # must still not buy more than 20 password checks.
    site = make_site(PASSWORD_HASH_CONCURRENCY="8")

    def guess(index: int) -> httpx.Response:
        body = {"email": f"user{index}@example.com", "password": WRONG}
        return site.client.post(SIGNIN, json=body, headers=site.via(ATTACKER))

    statuses = _at_once(40, guess)
    assert statuses[400] <= 20, f"{statuses[400]} of 40 sprayed guesses reached the password check"
    assert statuses == Counter({400: 20, 429: 20})


@pytest.mark.slow
def test_password_hashing_beyond_capacity_is_refused_fast_with_503(make_site: Callable[..., Site]) -> None:
    site = make_site(PASSWORD_HASH_CONCURRENCY="1")
    token_of(site.signup("owner@example.com"))
    with site.gateway.accounts._hasher._admitted():  # the only hashing slot is taken
        started = time.monotonic()
        response = site.signin("owner@example.com", PASSWORD, ip=OWNER_IP)
        waited = time.monotonic() - started
    assert (response.status_code, response.json()) == (503, BUSY)
    assert response.headers["Retry-After"] == "2"
    assert 1.8 <= waited < 4.0  # a bounded wait for a slot, then a refusal, not an unbounded queue
    token_of(site.signin("owner@example.com", PASSWORD, ip=OWNER_IP))


# --- Redis unavailable: per-instance limits, and /health says so ------------------------------


def test_with_redis_unreachable_limits_still_apply_and_revocation_holds(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    token = token_of(site.signup("owner@example.com"))
    for _ in range(5):
        assert_incorrect(site.signin("owner@example.com", WRONG, ip=ATTACKER))
    assert_limited(site.signin("owner@example.com", WRONG, ip=ATTACKER), 180)
    assert site.ready() == {
        "status": True,
        "database": "ok",
        "sessions": "stale",  # no channel: every request is checked against the database
        "rate_limits": DEGRADED,
        "revocation_channel": "disconnected",
    }
    assert site.session(token, ip=OWNER_IP).status_code == 200
    assert site.client.post("/api/v1/auths/signout", headers=bearer(token)).status_code == 200
    response = site.session(token, ip=OWNER_IP)
    assert (response.status_code, response.json()) == (401, REVOKED)


def test_health_reports_an_unreachable_redis_before_any_limited_request(
    make_site: Callable[..., Site],
) -> None:
    # /health is where operators look: it must not claim "redis" for a Redis nobody can reach just
    # because no sign-in has happened since start.
    site = make_site(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert site.ready()["rate_limits"] == DEGRADED


def test_health_shows_rate_limits_back_on_redis_without_waiting_for_a_signin(
    make_site: Callable[..., Site], private_redis: PrivateRedis
) -> None:
    site = make_site(REDIS_URL=private_redis.url)
    token_of(site.signup("owner@example.com"))
    assert site.ready()["rate_limits"] == "redis"
    private_redis.stop()
    assert_incorrect(site.signin("owner@example.com", WRONG, ip=ATTACKER))
    assert site.ready()["rate_limits"] == DEGRADED
    private_redis.start()
    # "Recovery is automatic": with no sign-in traffic at all, /health must still see Redis return.
    wait_for(
        lambda: site.ready()["rate_limits"] == "redis", timeout=10, interval=0.25, what="rate_limits=redis"
    )
