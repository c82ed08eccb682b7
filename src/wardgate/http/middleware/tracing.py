"""A server span around each HTTP request (installed only with `ENABLE_OTEL_TRACES`), in pure ASGI.

The span is current while the request runs, so the relay's client spans are its children. Its name
is the method and the route class (`request_metrics.RouteClasses`), known once the request is done;
an incoming `traceparent` makes it part of the caller's trace and does nothing else.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wardgate.http.middleware.request_metrics import RouteClasses
from wardgate.observability.tracing import TRACE_HEADERS, Tracing

_TRACE_HEADERS = frozenset(name.encode() for name in TRACE_HEADERS)


class TracingMiddleware:
    """Run each HTTP request inside a server span."""

    def __init__(self, app: ASGIApp, tracing: Tracing, routes: RouteClasses) -> None:
        self.app = app
        self._tracing = tracing
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        method: str = scope["method"]
        with self._tracing.server_span(method, scope["path"], carrier) as span:

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_status)
            finally:
                route = self._routes.of(scope)
                span.set_attribute("wardgate.route", route)
                span.update_name(f"{method} {route}")
