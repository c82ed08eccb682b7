"""Request body size limit: 413 at once for a declared oversize body, Starlette's counter for the rest.

Three cases (OWASP Denial of Service Cheat Sheet, "limit the size of requests"):

- A declared `Content-Length` above the limit is answered at once with
  `413 {"detail": "Request body too large (limit N bytes)"}`; the app, and any authentication or
  database work in it, never runs.
- An HTTP/1 body of one declared length within the limit passes uncounted: the server reads
  exactly that many bytes as the body (RFC 9112 §6.3), the rest as the next request.
- A body without a length (chunked, HTTP/2) or with an ambiguous one is counted as the app reads it,
  by Starlette's own `RequestBodyLimitMiddleware` (not re-written here). Past the limit, reading raises
  Starlette's 413 `HTTPException` ("Content Too Large"), which the app's exception handlers turn
  into its usual error response. If the app had already started its response (a streamed upload
  relayed while answering), a 413 can no longer be sent: the exception propagates and the server
  aborts the connection, which is the only honest signal left.

WebSocket and lifespan scopes pass through untouched.
"""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.http.scope import declared_length, header

_HTTP1 = frozenset({"1.0", "1.1"})
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})  # ASGI header names are lower-case


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length, or None when absent or malformed (the server rejects malformed ones)."""
    return declared_length(header(scope, b"content-length"))


class BodySizeLimitMiddleware:
    """Refuse HTTP request bodies larger than `max_body_bytes` with a 413."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 0:
            raise ValueError("max_body_bytes must be a non-negative integer")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.streaming = RequestBodyLimitMiddleware(app, max_body_size=max_body_bytes)
        self.detail = f"Request body too large (limit {max_body_bytes} bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a declared oversize body at once; count the others while the app reads them."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        framing = [(name, value) for name, value in scope["headers"] if name in _BODY_HEADERS]
        http1 = scope.get("http_version") in _HTTP1
        if http1 and not framing:
            # HTTP/1 without Content-Length or Transfer-Encoding: the request has no body (RFC 9112
            # §6.3), nothing to count (most requests). HTTP/2 bodies need neither, so they are counted.
            await self.app(scope, receive, send)
            return
        length = _declared_length(scope)
        if length is not None and length > self.max_body_bytes:
            # Connection: close, so the server does not try to read the unread body as a next request.
            response = JSONResponse({"detail": self.detail}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, send)
            return
        if http1 and length is not None and len(framing) == 1:
            # HTTP/1 with one valid Content-Length and no Transfer-Encoding: the server reads exactly
            # that many bytes as the body (RFC 9112 §6.3; more are the next request's), within the
            # limit, so there is nothing to count. The counter's wrappers cost every chunk of the
            # answer a call (a model's stream, say).
            await self.app(scope, receive, send)
            return
        await self.streaming(scope, receive, send)


class HeaderSizeLimitMiddleware:
    """Refuse requests whose headers are too large or too many: 431 (RFC 6585 §5).

    uvicorn's httptools parser sets no limit of its own, so an attacker could make every request
    carry megabytes of headers through authentication, logging and the proxy.
    """

    def __init__(self, app: ASGIApp, max_header_bytes: int, max_header_count: int = 100) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_header_count = max_header_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the size and number of headers, then run the app."""
        if scope["type"] in ("http", "websocket"):
            headers = scope["headers"]
            size = sum(len(name) + len(value) + 4 for name, value in headers)
            if size > self.max_header_bytes or len(headers) > self.max_header_count:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1009})
                    return
                limit = f"{self.max_header_bytes} bytes, {self.max_header_count} fields"
                detail = f"Request headers too large (limit {limit})"
                await JSONResponse({"detail": detail}, status_code=431)(scope, receive, send)
                return
        await self.app(scope, receive, send)
