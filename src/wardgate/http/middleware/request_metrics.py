"""Request metrics: every HTTP request counted and timed by route class and status, in pure ASGI.

A route class is one of a small fixed set, never the path: `api` (wardgate's own JSON API),
`forward_auth`, `pages`, `static`, `health`, `metrics`, `relay:<upstream>` and `other` (a path
nobody serves). The relay's dispatch names the upstream it chose in the scope (`ROUTE_CLASS_KEY`);
every other path is classified by prefixes computed once. The time runs from the request's arrival
here to the end of its answer (a stream's last chunk), measured with `perf_counter`.
"""

from __future__ import annotations

from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wardgate.observability.metrics import RequestDurations

ROUTE_CLASS_KEY = "wardgate.route_class"  # set by the relay's dispatch for paths it handles


class RouteClasses:
    """Which class a path of wardgate's own belongs to, under `WARDGATE_PATH_PREFIX`."""

    def __init__(self, prefix: str) -> None:
        self._exact = {f"{prefix}/health": "health", f"{prefix}/metrics": "metrics"}
        # Longest first: the forward-auth endpoints are under the API's prefix.
        self._prefixes = (
            (f"{prefix}/api/v1/authz/", "forward_auth"),
            (f"{prefix}/api/", "api"),
            (f"{prefix}/static/", "static"),
        )

    def of(self, scope: Scope) -> str:
        """The route class of a request that went through (or past) the relay's dispatch."""
        named: str | None = scope.get(ROUTE_CLASS_KEY)
        if named is not None:
            return named
        path: str = scope["path"]
        exact = self._exact.get(path)
        if exact is not None:
            return exact
        for start, name in self._prefixes:
            if path.startswith(start):
                return name
        return "pages"


class RequestMetricsMiddleware:
    """Observe each HTTP request's route class, status and duration once its answer has ended."""

    def __init__(self, app: ASGIApp, routes: RouteClasses) -> None:
        self.app = app
        self._routes = routes
        self._durations = RequestDurations()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # what the server answers if the app fails before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._durations.observe(self._routes.of(scope), status, perf_counter() - started)
