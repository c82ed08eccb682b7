"""GET /metrics: who may read it, where it lives, and that it never names a person."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, refused, signin, signup
from tests.observability.conftest import METRICS_TOKEN, SCRAPE, label_values, scrape, value
from wardgate.http.routes import metrics as metrics_route

MakeGateway = Callable[..., TestClient]


def test_only_the_token_reads_the_metrics(make_gateway: MakeGateway) -> None:
    client = make_gateway()
    assert "wardgate_http_request_duration_seconds" not in refused(client.get("/metrics"), 403)
    wrong = METRICS_TOKEN[:-1] + ("x" if METRICS_TOKEN[-1] != "x" else "y")  # same length, one byte off
    refused(client.get("/metrics", headers=bearer(wrong)), 403)
    refused(client.get("/metrics", headers=bearer(METRICS_TOKEN[:-1])), 403)
    refused(client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"}), 403)
    refused(client.get("/metrics", headers={"X-Api-Key": METRICS_TOKEN}), 403)
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE wardgate_http_request_duration_seconds histogram" in response.text


def test_an_allowed_address_reads_without_the_token(make_gateway: MakeGateway) -> None:
    allowed = make_gateway(client="10.9.1.2", METRICS_ALLOW_IPS="10.9.0.0/16", METRICS_TOKEN="")
    assert allowed.get("/metrics").status_code == 200
    other = make_gateway(client="10.8.0.1", METRICS_ALLOW_IPS="10.9.0.0/16", METRICS_TOKEN="")
    refused(other.get("/metrics"), 403)


def test_the_address_is_the_client_the_trusted_proxy_names(make_gateway: MakeGateway) -> None:
    """Behind a proxy, the address is the client it forwards for, never the proxy's own."""
    env = {"METRICS_ALLOW_IPS": "10.9.0.0/16", "FORWARDED_ALLOW_IPS": "10.0.0.1", "METRICS_TOKEN": ""}
    proxy = make_gateway(client="10.0.0.1", **env)
    assert proxy.get("/metrics", headers={"X-Forwarded-For": "10.9.3.4"}).status_code == 200
    refused(proxy.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"}), 403)
    # An untrusted peer cannot claim an allowed address.
    stranger = make_gateway(client="203.0.113.9", **env)
    refused(stranger.get("/metrics", headers={"X-Forwarded-For": "10.9.3.4"}), 403)


def test_without_a_token_or_addresses_there_is_no_metrics_route(make_gateway: MakeGateway) -> None:
    client = make_gateway(METRICS_TOKEN="")
    assert client.get("/metrics", headers=SCRAPE).status_code == 404


def test_the_route_sits_beside_health_under_the_prefix(make_gateway: MakeGateway) -> None:
    client = make_gateway(WARDGATE_PATH_PREFIX="/gate")
    assert client.get("/gate/health").status_code == 200
    assert client.get("/gate/metrics", headers=SCRAPE).status_code == 200
    assert client.get("/metrics", headers=SCRAPE).status_code == 404


def test_no_person_appears_in_the_metrics(make_gateway: MakeGateway) -> None:
    """Names, addresses and ids stay out of every label, whatever the person did: signed in, used
    the API, mistyped their password until rate-limited (that limit's bucket holds the address)."""
    client = make_gateway(SIGNIN_RATE_LIMIT="2/1m")
    email, name = "zebulon.quixote.metrics@example.org", "Zebulon Quixote-Metrics"
    body = signup(client, email, name=name)
    token, user_id = body["token"], body["id"]
    assert client.get("/api/v1/auths/", headers=bearer(token)).status_code == 200
    signin(client, email)
    for _ in range(3):
        client.post("/api/v1/auths/signin", json={"email": email, "password": "not-" + PASSWORD})
    text = scrape(client)
    assert value(text, "wardgate_rate_limit_refusals_total", limit="signin") >= 1  # it was counted
    lowered = text.lower()
    for secret in (email, "zebulon", "quixote", user_id, token, METRICS_TOKEN):
        assert secret.lower() not in lowered
    assert all(len(v) <= 40 for v in label_values(text))


def test_live_sessions_are_counted_in_the_database(
    make_gateway: MakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_route, "COUNT_EVERY", 0.0)
    client = make_gateway()
    assert value(scrape(client), "wardgate_sessions_live") == 0
    first = signup(client, "first@example.com")
    signup(client, "second@example.com")
    assert value(scrape(client), "wardgate_sessions_live") == 2
    assert client.post("/api/v1/auths/signout", headers=bearer(first["token"])).status_code == 200
    assert value(scrape(client), "wardgate_sessions_live") == 1
