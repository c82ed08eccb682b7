"""What every request adds to the metrics: its route class and status, the authentication decision,
and the refusals of rate limits and budgets — each label from a small fixed set."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from tests.conftest import SECRET, bearer, signup
from tests.observability.conftest import SCRAPE, grew, label_values, scrape, value
from wardgate.errors import RateLimitedError
from wardgate.http.errors import error_response
from wardgate.http.middleware.request_metrics import ROUTE_CLASS_KEY, RouteClasses
from wardgate.observability.metrics import refusal_outcome, status_label
from wardgate.security.tokens import TokenCodec

MakeGateway = Callable[..., TestClient]
REQUESTS = "wardgate_http_request_duration_seconds_count"
AUTHENTICATIONS = "wardgate_authentications_total"


def test_requests_are_counted_by_route_class_and_status(make_gateway: MakeGateway) -> None:
    client = make_gateway()
    before = scrape(client)
    assert client.get("/health").status_code == 200
    assert client.get("/api/config").status_code == 200
    assert client.get("/api/v1/auths/").status_code == 401
    assert client.get("/static/wardgate.css").status_code == 200
    assert client.get("/auth").status_code == 200
    assert client.get("/no/such/page/9f1c2e").status_code == 404
    after = scrape(client)
    for route, status in [
        ("health", "200"),
        ("api", "200"),
        ("api", "401"),
        ("static", "200"),
        ("pages", "200"),
        ("other", "404"),
    ]:
        assert grew(before, after, REQUESTS, route=route, status=status) == 1, (route, status)
    assert value(after, REQUESTS, route="metrics", status="200") >= 1  # the scrape itself
    assert not any("9f1c2e" in v for v in label_values(after))  # never the path


def test_route_classes_are_a_fixed_set_under_the_prefix() -> None:
    classes = RouteClasses("/gate")
    cases = {
        "/gate/health": "health",
        "/gate/metrics": "metrics",
        "/gate/api/v1/authz/forward-auth": "forward_auth",
        "/gate/api/v1/users/0b1e5d": "api",
        "/gate/static/wardgate.css": "static",
        "/gate/admin": "pages",
        "/health": "pages",  # not wardgate's own /health when it lives under a prefix
    }
    for path, expected in cases.items():
        assert classes.of({"path": path}) == expected, path
    assert classes.of({"path": "/api/chat", ROUTE_CLASS_KEY: "relay:ollama"}) == "relay:ollama"


def test_statuses_are_exact_when_expected_and_classes_otherwise() -> None:
    assert [status_label(s) for s in (200, 401, 429, 502, 418, 299, 599)] == [
        "200",
        "401",
        "429",
        "502",
        "4xx",
        "2xx",
        "5xx",
    ]


def test_authentication_decisions_are_counted_by_outcome(make_gateway: MakeGateway) -> None:
    client = make_gateway()
    body = signup(client, "outcome@example.com")
    expired = TokenCodec([SECRET], timedelta(minutes=5)).issue(body["id"], "stamp", now=time.time() - 3600)
    before = scrape(client)
    session = bearer(body["token"])
    assert client.get("/api/v1/auths/", headers=session).status_code == 200
    assert client.get("/api/v1/auths/").status_code == 401
    assert client.get("/api/v1/auths/", headers=bearer("not-a-jwt")).status_code == 401
    assert client.get("/api/v1/auths/", headers={"Authorization": "Token abc"}).status_code == 401
    assert client.get("/api/v1/auths/", headers=bearer(expired.token)).status_code == 401
    assert client.post("/api/v1/auths/signout", headers=session).status_code == 200
    assert client.get("/api/v1/auths/", headers=session).status_code == 401
    after = scrape(client)

    def outcome(name: str) -> float:
        return grew(before, after, AUTHENTICATIONS, outcome=name)

    assert outcome("session") == 1
    assert outcome("anonymous") == 1
    assert outcome("invalid") == 2  # a token that is not one, and a scheme that is not Bearer
    assert outcome("expired") == 1
    assert outcome("revoked") == 1


def test_an_api_key_on_wardgates_own_api_is_forbidden(make_gateway: MakeGateway) -> None:
    """(An API key accepted at the relay is counted as `api_key`: test_upstreams.)"""
    client = make_gateway(ENABLE_API_KEYS="true", USER_PERMISSIONS_FEATURES_API_KEYS="true")
    token = signup(client, "keys@example.com")["token"]
    created = client.post("/api/v1/auths/api_key", headers=bearer(token))
    assert created.status_code == 200, created.text
    key = created.json()["api_key"]
    before = scrape(client)
    assert client.get("/api/v1/auths/", headers=bearer(key)).status_code == 403
    after = scrape(client)
    assert grew(before, after, AUTHENTICATIONS, outcome="api_key") == 0
    assert grew(before, after, AUTHENTICATIONS, outcome="forbidden") == 1


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (401, "not_authenticated", "anonymous"),
        (401, "token_expired", "expired"),
        (401, "api_key_expired", "expired"),
        (401, "session_revoked", "revoked"),
        (401, "api_key_ended", "revoked"),
        (401, "invalid_token", "invalid"),
        (401, "unknown_api_key", "invalid"),
        (401, "something_new", "invalid"),
        (403, "api_key_not_allowed_here", "forbidden"),
        (429, "api_key_rate_limited", "rate_limited"),
        (503, "busy", "unavailable"),
    ],
)
def test_refusal_outcomes_are_bounded(status: int, code: str, outcome: str) -> None:
    assert refusal_outcome(status, code) == outcome


def test_a_rate_limit_is_counted_by_its_name_never_its_key(make_gateway: MakeGateway) -> None:
    client = make_gateway(SIGNIN_RATE_LIMIT="2/1m")
    before = value(scrape(client), "wardgate_rate_limit_refusals_total", limit="signin")
    attempt = {"email": "who@example.com", "password": "x" * 12}
    statuses = [client.post("/api/v1/auths/signin", json=attempt).status_code for _ in range(4)]
    assert statuses.count(429) == 2
    after = scrape(client)
    assert value(after, "wardgate_rate_limit_refusals_total", limit="signin") - before == 2
    assert not any("who@example.com" in v for v in label_values(after))


def test_a_budget_refusal_is_counted_by_whose_budget_it_is(make_gateway: MakeGateway) -> None:
    """Where the relay turns a used-up budget into its 429 (`error_response`), as the budget's kind."""
    client = make_gateway()
    before = scrape(client)
    for kind, owner in (("user", "5d3b0c53-user-id"), ("group", "secret-group"), ("key", "key-id-7")):
        bucket = f"budget:{kind}:{owner}:1d"
        exc = RateLimitedError(
            "used up", retry_after=60, code="budget_exhausted", bucket=bucket, window=86400
        )
        assert error_response(exc).status_code == 429
    after = scrape(client)
    for kind in ("user", "group", "key"):
        assert grew(before, after, "wardgate_budget_refusals_total", kind=kind) == 1
    assert not {"5d3b0c53-user-id", "secret-group", "key-id-7"} & label_values(after)
    assert value(after, "wardgate_rate_limit_refusals_total", limit="budget") == 0


def test_metrics_are_not_measured_when_nobody_may_read_them(make_gateway: MakeGateway) -> None:
    """No token, no addresses: no middleware, so no cost on each request."""
    quiet = make_gateway(METRICS_TOKEN="")
    loud = make_gateway()
    before = value(scrape(loud), REQUESTS, route="health", status="200")
    assert quiet.get("/health").status_code == 200
    assert value(scrape(loud), REQUESTS, route="health", status="200") == before
    assert loud.get("/metrics", headers=SCRAPE).status_code == 200
