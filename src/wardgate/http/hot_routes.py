"""The few routes called all the time, answered without FastAPI's per-request machinery.

Every signed-in client polls `GET /api/v1/auths/`, and a reverse proxy in forward-auth mode asks
`/api/v1/authz/forward-auth` or `/auth-request` once per request it serves. For such a route,
FastAPI's router (one pattern per route tried in turn), dependency solving and response validation
cost more than the check itself: measured in process, 43 µs for a bare FastAPI route against 2 µs
for a plain ASGI answer, while JWT verification and the revocation view take 8 µs (bench/layers.py).

`HotRoutes` sits where `UpstreamDispatch` sits (inside every middleware: trusted proxies, limits,
security headers, CORS, CSRF, metrics all apply as before) and calls the very endpoint functions
FastAPI has registered (they take the request and nothing else, so there is nothing to solve) for
an exact `GET` path. Errors go through the application's own exception handlers, so an answer is
byte for byte what FastAPI would give; the routes stay in FastAPI too (OpenAPI, `HEAD`, and any
other method, which FastAPI answers 405).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """Answer `GET` on the paths of `endpoints` by calling them directly; everything else to `app`."""

    def __init__(self, app: ASGIApp, routes: FastAPI, endpoints: Mapping[str, Endpoint]) -> None:
        for path, endpoint in endpoints.items():
            if list(inspect.signature(endpoint).parameters) != ["request"]:
                raise ValueError(f"{path}: a hot endpoint takes the request alone")
        self.app = app
        self.routes = routes
        self.endpoints = dict(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.endpoints.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.routes  # as Starlette sets it: the endpoints read app.state
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:
            response = await self._handled(request, exc)
        await response(scope, receive, send)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The answer of the application's handler for `exc` (the nearest class registered)."""
        handlers = self.routes.exception_handlers
        handler = next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers), None)
        if handler is None:
            raise exc
        answer = handler(request, exc)
        return await answer if inspect.isawaitable(answer) else answer
