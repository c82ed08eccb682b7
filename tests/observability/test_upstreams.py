"""What a proxied call adds: the relay's route class, the upstream's time to first byte, duration and
errors, the tokens its model server reported — and what caps the model label."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from tests.conftest import bearer, signup
from tests.observability.conftest import grew, label_values, scrape, value
from tests.servers import free_port
from wardgate.observability import metrics

MakeGateway = Callable[..., TestClient]
CHAT = [{"role": "user", "content": "Say hello"}]


def models_gateway(make_gateway: MakeGateway, models_server: str, **extra: str) -> TestClient:
    return make_gateway(
        OLLAMA_BASE_URL=models_server,
        OPENAI_API_BASE_URL=f"{models_server}/v1",
        OPENAI_API_KEY="sk-upstream-secret-0123456789",
        **extra,
    )


def test_a_model_call_counts_its_tokens_and_times_its_upstream(
    make_gateway: MakeGateway, models_server: str
) -> None:
    client = models_gateway(make_gateway, models_server)
    token = signup(client, "admin-tokens@example.com")["token"]  # the first account: an admin
    before = scrape(client)
    body = {"model": "gpt-4o-mini", "messages": CHAT}
    response = client.post("/openai/chat/completions", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    after = scrape(client)

    def change(name: str, **labels: str) -> float:
        return grew(before, after, name, **labels)

    for kind in ("prompt", "completion"):
        counted = change("wardgate_model_tokens_total", upstream="openai", model="gpt-4o-mini", kind=kind)
        assert counted == usage[f"{kind}_tokens"] > 0
    assert change("wardgate_upstream_ttfb_seconds_count", upstream="openai") == 1
    assert change("wardgate_upstream_duration_seconds_count", upstream="openai", status="2xx") == 1
    assert change("wardgate_http_request_duration_seconds_count", route="relay:openai", status="200") == 1
    assert change("wardgate_authentications_total", outcome="session") == 1


def test_a_model_call_is_not_measured_where_nobody_may_read_the_metrics(
    make_gateway: MakeGateway, models_server: str
) -> None:
    """No METRICS_TOKEN, no METRICS_ALLOW_IPS: the relay times nothing and counts nothing (the
    figures would cost each call about 3 µs for nobody). Another gateway in this process scrapes."""
    quiet = models_gateway(make_gateway, models_server, METRICS_TOKEN="")
    loud = make_gateway()
    token = signup(quiet, "admin-quiet@example.com")["token"]
    before = scrape(loud)
    body = {"model": "gpt-4o-mini", "messages": CHAT}
    response = quiet.post("/openai/chat/completions", json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    after = scrape(loud)
    for kind in ("prompt", "completion"):
        labels = {"upstream": "openai", "model": "gpt-4o-mini", "kind": kind}
        assert grew(before, after, "wardgate_model_tokens_total", **labels) == 0
    assert grew(before, after, "wardgate_upstream_ttfb_seconds_count", upstream="openai") == 0
    assert (
        grew(before, after, "wardgate_upstream_duration_seconds_count", upstream="openai", status="2xx") == 0
    )
    assert grew(before, after, "wardgate_authentications_total", outcome="session") == 0


def test_the_unmeasured_call_overrides_every_method_of_a_measured_one() -> None:
    """The relay's no-op for unread metrics sets no attribute: a method added to `UpstreamCall` and
    not to it would fail on every call where metrics are off."""
    public = {name for name, v in vars(metrics.UpstreamCall).items() if callable(v) and name[0] != "_"}
    assert public == {"answered", "failed", "ended"}
    assert public <= set(vars(type(metrics.UNMEASURED)))
    metrics.UNMEASURED.answered(200)
    metrics.UNMEASURED.failed("timeout")
    metrics.UNMEASURED.ended()


def test_an_api_key_at_the_relay_is_counted_as_one(make_gateway: MakeGateway, models_server: str) -> None:
    client = models_gateway(make_gateway, models_server, ENABLE_API_KEYS="true")
    token = signup(client, "admin-keys@example.com")["token"]
    created = client.post("/api/v1/auths/api_key", headers=bearer(token))
    assert created.status_code == 200, created.text
    key = created.json()["api_key"]
    before = value(scrape(client), "wardgate_authentications_total", outcome="api_key")
    assert client.get("/ollama/api/tags", headers=bearer(key)).status_code == 200
    assert value(scrape(client), "wardgate_authentications_total", outcome="api_key") - before == 1


def test_an_unreachable_upstream_is_an_error_of_that_upstream(make_gateway: MakeGateway) -> None:
    client = make_gateway(UPSTREAM_URL=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    token = signup(client, "admin-down@example.com")["token"]
    before = scrape(client)
    assert client.get("/some/app/page", headers=bearer(token)).status_code == 502
    after = scrape(client)
    assert grew(before, after, "wardgate_upstream_errors_total", upstream="app", kind="unavailable") == 1
    assert (
        grew(before, after, "wardgate_upstream_duration_seconds_count", upstream="app", status="error") == 1
    )
    assert value(after, "wardgate_http_request_duration_seconds_count", route="relay:app", status="502") >= 1


def test_model_names_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that meters any name a client makes up cannot grow the series without bound."""
    monkeypatch.setattr(metrics, "MAX_MODELS", 2)
    monkeypatch.setattr(metrics, "_models", set())
    for name in ("cap-model-a", "cap-model-b", "cap-model-c", "cap-model-d"):
        metrics.count_tokens("capped", name, 1, 2)
    text = metrics.exposition(live_sessions=None).decode()
    assert {"cap-model-a", "cap-model-b"} <= label_values(text)
    assert not {"cap-model-c", "cap-model-d"} & label_values(text)
    assert value(text, "wardgate_model_tokens_total", upstream="capped", model="other", kind="prompt") == 2
