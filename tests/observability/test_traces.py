"""OpenTelemetry traces (the optional install): a server span per request, a client span per call
upstream, the upstream told the trace as W3C `traceparent`; nothing of it loaded when off."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, SECRET, bearer, signup
from wardgate.app import create_app
from wardgate.config import Settings
from wardgate.errors import ConfigError
from wardgate.observability import tracing

TRACES_ON = {"ENABLE_OTEL": "true", "ENABLE_OTEL_TRACES": "true"}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The spans wardgate exports, kept in memory instead of sent to a collector."""
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "_exporter", lambda _export: exporter)
    return exporter


@pytest.fixture
def traced(
    make_settings: Callable[..., Settings], upstream: str, exported: InMemorySpanExporter
) -> Iterator[TestClient]:
    """wardgate with traces on, in front of the fake app server; `stop` it to flush the spans."""
    settings = make_settings(**TRACES_ON, UPSTREAM_URL=upstream)
    client = TestClient(create_app(settings), base_url=ORIGIN, headers={"origin": ORIGIN})
    client.__enter__()
    yield client
    stop(client)


def stop(client: TestClient) -> None:
    """End the lifespan (once), which exports what is pending."""
    if not getattr(client, "stopped", False):
        client.__exit__(None, None, None)
        client.stopped = True  # type: ignore[attr-defined]


def _received(client: TestClient, headers: dict[str, str]) -> dict[str, str]:
    response = client.get("/echo-headers", headers=headers)
    assert response.status_code == 200, response.text
    return {name: value for name, value in response.json()}


def test_a_proxied_request_is_a_server_span_with_a_client_span_the_upstream_continues(
    traced: TestClient, exported: InMemorySpanExporter
) -> None:
    token = signup(traced, "traced@example.com")["token"]
    received = _received(traced, bearer(token))
    stop(traced)
    version, trace_id, parent_id, flags = received["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    spans = exported.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "GET relay:app"]
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert f"{server.context.trace_id:032x}" == trace_id == f"{client.context.trace_id:032x}"
    assert f"{client.context.span_id:016x}" == parent_id  # the upstream's parent is the call's span
    assert client.attributes is not None and client.attributes["wardgate.upstream"] == "app"
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert server.resource.attributes["service.name"] == "wardgate"


def test_a_callers_traceparent_is_the_parent_and_nothing_more(
    traced: TestClient, exported: InMemorySpanExporter
) -> None:
    token = signup(traced, "caller@example.com")["token"]
    caller = {
        "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        "tracestate": "vendor=opaque",
        **bearer(token),
    }
    received = _received(traced, caller)
    stop(traced)
    _, trace_id, parent_id, _ = received["traceparent"].split("-")
    assert trace_id == CALLER_TRACE  # the same trace, continued
    assert parent_id != CALLER_SPAN  # the upstream's parent is wardgate's call, not the caller's span
    assert list(received).count("traceparent") == 1  # replaced, not added beside the caller's
    (server,) = [s for s in exported.get_finished_spans() if s.kind is SpanKind.SERVER and "relay" in s.name]
    assert server.parent is not None and f"{server.parent.span_id:016x}" == CALLER_SPAN


def test_an_unparsable_traceparent_starts_a_trace_of_its_own(
    traced: TestClient, exported: InMemorySpanExporter
) -> None:
    token = signup(traced, "garbage@example.com")["token"]
    received = _received(traced, {"traceparent": "00-zzzz-not-a-trace", **bearer(token)})
    assert received["traceparent"].startswith("00-") and "zzzz" not in received["traceparent"]


def test_without_traces_the_callers_headers_pass_as_they_came(
    make_client: Callable[..., TestClient], upstream: str
) -> None:
    client = make_client(UPSTREAM_URL=upstream)
    token = signup(client, "untraced@example.com")["token"]
    sent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    assert _received(client, {"traceparent": sent, **bearer(token)})["traceparent"] == sent


def _loaded(environment: dict[str, str]) -> set[str]:
    """The modules a fresh process has loaded once it has built the application for `environment`."""
    code = (
        "import json, sys\n"
        "from wardgate.app import create_app\n"
        "from wardgate.config import load_settings\n"
        f"create_app(load_settings(json.loads({json.dumps(json.dumps(environment))})))\n"
        "print(' '.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_without_traces_the_sdk_and_exporters_are_never_imported(base_env: dict[str, str]) -> None:
    """Start-up memory: only a process that traces pays for the SDK, the exporters and gRPC. (redis
    imports the SDK's metrics on its own whenever it is installed: that part is not ours to keep out.)"""
    heavy = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "grpc", "google.protobuf")

    def ours(modules: set[str]) -> set[str]:
        return {m for m in modules if m.startswith(heavy)}

    assert ours(_loaded(base_env)) == set()
    assert "opentelemetry.sdk.trace" in ours(_loaded({**base_env, **TRACES_ON}))  # the check can fail


def test_traces_without_the_optional_install_stop_start_up(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(ConfigError) as caught:
        create_app(make_settings(**TRACES_ON))
    assert "pip install 'wardgate[otel]'" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("always_on", "AlwaysOnSampler"),
        ("always_off", "AlwaysOffSampler"),
        ("traceidratio", "TraceIdRatioBased{0.25}"),
        ("parentbased_always_on", "ParentBased{root:AlwaysOnSampler"),
        ("parentbased_traceidratio", "ParentBased{root:TraceIdRatioBased{0.25}"),
    ],
)
def test_open_webuis_sampler_names(name: str, expected: str) -> None:
    assert tracing._sampler(name, 0.25).get_description().startswith(expected)


def test_the_collectors_basic_authentication() -> None:
    export: dict[str, Any] = {
        "endpoint": "http://collector:4317",
        "insecure": True,
        "protocol": "grpc",
        "service_name": "wardgate",
        "sampler": "always_on",
        "sampler_arg": 1.0,
    }
    assert tracing.TraceExport(**export).headers() == {}
    with_auth = tracing.TraceExport(**export, username="otel", password="s3cret")
    assert with_auth.headers() == {"authorization": "Basic b3RlbDpzM2NyZXQ="}
    assert SECRET not in repr(with_auth.headers())
