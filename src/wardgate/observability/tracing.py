"""OpenTelemetry traces, configured with Open WebUI's variable names: a server span per request and
a client span per call upstream, whose context the upstream receives as W3C `traceparent`.

An optional install (`pip install 'wardgate[otel]'`): the SDK and its exporters are imported by
`Tracing.start` alone, called only when `ENABLE_OTEL` and `ENABLE_OTEL_TRACES` are both on, so that
a process without traces neither loads them nor pays their start-up time and memory.

An incoming `traceparent` (and `tracestate`) is used as the parent of the server span and for
nothing else: only the W3C trace-context propagator is used, never baggage, whose values a client
chooses and which would otherwise travel on to the upstreams.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from wardgate.errors import ConfigError

if TYPE_CHECKING:  # the optional install: never imported at run time from here
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INSTALL_HINT = "pip install 'wardgate[otel]'"
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class Span(Protocol):
    """What wardgate does with a span: name it once the route is known, and add facts."""

    def set_attribute(self, key: str, value: str | int) -> None: ...

    def update_name(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TraceExport:
    """Where spans go and which are kept (Open WebUI's `OTEL_*` variables)."""

    endpoint: str
    insecure: bool
    protocol: Literal["grpc", "http"]
    service_name: str
    sampler: str
    sampler_arg: float
    username: str = ""
    password: str | None = None

    def headers(self) -> dict[str, str]:
        """HTTP basic authentication to the collector, as Open WebUI sends it."""
        if not self.username or self.password is None:
            return {}
        pair = f"{self.username}:{self.password}".encode()
        return {"authorization": f"Basic {base64.b64encode(pair).decode()}"}


class Tracing:
    """Spans for wardgate's requests and its calls upstream, through one tracer provider of its own."""

    def __init__(self, provider: TracerProvider, propagator: TraceContextTextMapPropagator) -> None:
        from opentelemetry.trace import SpanKind  # the API: installed with the SDK that `provider` is

        self._provider = provider
        self._tracer: Tracer = provider.get_tracer("wardgate")
        self._propagator = propagator
        self._server, self._client = SpanKind.SERVER, SpanKind.CLIENT

    @classmethod
    def start(cls, export: TraceExport, *, exporter: SpanExporter | None = None) -> Tracing:
        """Import the SDK and start exporting (to `exporter` when given: tests use an in-memory one).

        ConfigError naming the install when the optional packages are missing.
        """
        try:
            from opentelemetry.sdk.resources import SERVICE_NAME, Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            raise ConfigError(
                [f"ENABLE_OTEL_TRACES: the OpenTelemetry packages are not installed; run {INSTALL_HINT}"]
            ) from None
        if exporter is None:
            exporter = _exporter(export)
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: export.service_name}),
            sampler=_sampler(export.sampler, export.sampler_arg),
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))  # exported off the request's path
        return cls(provider, TraceContextTextMapPropagator())

    @contextlib.contextmanager
    def server_span(self, method: str, path: str, carrier: dict[str, str]) -> Iterator[Span]:
        """The span of one request, current while it runs; `carrier` holds its trace-context headers."""
        parent = self._propagator.extract(carrier) if carrier else None
        attributes = {"http.request.method": method, "url.path": path}
        with self._tracer.start_as_current_span(
            method, context=parent, kind=self._server, attributes=attributes
        ) as span:
            yield span

    @contextlib.contextmanager
    def client_span(self, upstream: str, method: str, url: str) -> Iterator[Span]:
        """The span of one call to an upstream, a child of the current request's."""
        attributes = {"http.request.method": method, "url.full": url, "wardgate.upstream": upstream}
        with self._tracer.start_as_current_span(
            f"{method} {upstream}", kind=self._client, attributes=attributes
        ) as span:
            yield span

    def context_headers(self) -> list[tuple[str, str]]:
        """`traceparent` (and `tracestate`) for the current span, to send upstream."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return list(carrier.items())

    def shutdown(self) -> None:
        """Export what is pending and stop."""
        self._provider.shutdown()


def _sampler(name: str, ratio: float) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    chosen = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": sampling.TraceIdRatioBased(ratio),
    }
    if name.startswith("parentbased_"):
        return sampling.ParentBased(chosen[name.removeprefix("parentbased_")])
    return chosen[name]


def _exporter(export: TraceExport) -> SpanExporter:
    """OTLP over gRPC or HTTP (protobuf), with the collector's basic authentication if set."""
    try:
        if export.protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            return HttpExporter(endpoint=export.endpoint, headers=export.headers())
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    except ImportError:
        raise ConfigError(
            [f"OTEL_OTLP_SPAN_EXPORTER: the OTLP exporter is not installed; run {INSTALL_HINT}"]
        ) from None
    return GrpcExporter(endpoint=export.endpoint, insecure=export.insecure, headers=export.headers())
