"""Pure ASGI middleware that tells the audit log where the current request comes from."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.audit.log import request_origin
from wardgate.http.scope import text_header


class AuditContextMiddleware:
    """Set the client IP (already resolved from trusted proxies) and user agent for this request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with the request's origin in the audit context."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        agent = text_header(scope, b"user-agent")
        token = request_origin.set((client[0] if client else None, agent))
        try:
            await self.app(scope, receive, send)
        finally:
            request_origin.reset(token)
