"""Forward-auth questions that arrive as WebSocket handshakes are answered as plain requests.

A proxy asking whether a WebSocket may pass (Caddy's `forward_auth`, Traefik's `forwardAuth`) copies
the client's headers into its GET to wardgate, `Upgrade: websocket` among them, and expects an
ordinary answer (200 with identity headers, 401, 403). An ASGI server turns such a request into a
WebSocket scope, which no route answers. For the forward-auth paths alone this middleware runs the
app with the equivalent GET scope and sends its response as the handshake's answer, through the ASGI
`websocket.http.response` extension (without it, the handshake is refused: fail closed).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UPGRADE_HEADERS = frozenset({b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version"})


class UpgradeAsRequestMiddleware:
    """Answer WebSocket handshakes to `paths` as the GET requests they are meant to be."""

    def __init__(self, app: ASGIApp, paths: Collection[str]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rewrite a handshake to one of `paths`; everything else passes untouched."""
        if scope["type"] != "websocket" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        await receive()  # websocket.connect
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = [(k, v) for k, v in scope["headers"] if k not in _UPGRADE_HEADERS]
        http: dict[str, Any] = {
            **scope,
            "type": "http",
            "method": "GET",
            "scheme": {"ws": "http", "wss": "https"}.get(scope.get("scheme", "ws"), "http"),
            "headers": headers,
        }
        http.pop("subprotocols", None)

        async def nothing() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def as_handshake_answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send({**message, "type": "websocket.http.response.start"})
            elif message["type"] == "http.response.body":
                await send({**message, "type": "websocket.http.response.body"})

        await self.app(http, nothing, as_handshake_answer)
