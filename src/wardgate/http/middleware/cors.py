"""CORS: Starlette's `CORSMiddleware` for the origins in `CORS_ALLOW_ORIGIN`, and nothing for the rest.

Open WebUI defaults to `*` with credentials, i.e. it reflects any origin with
`Access-Control-Allow-Credentials: true` (CVE-2026-56400). wardgate instead:

- default (empty): no cross-origin access at all;
- a `;`-separated list of exact origins: those origins, with credentials;
- `*` alone: any origin, never with credentials (the Fetch Standard's CORS check refuses `*` with
  credentials anyway; Starlette would reflect the origin instead, which is the hole above).

The CORS logic itself is Starlette's. `CORSGuardMiddleware` only guards its edges: a request from an
origin that is not allowed never reaches Starlette's middleware, because Starlette answers a refused
preflight with its `Access-Control-Allow-*` headers anyway and adds `Access-Control-Allow-Credentials`
to every response carrying an `Origin`. Such a preflight gets a 403 without any CORS header; other
requests go straight to the app.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.config.network import cors_origins
from wardgate.http.scope import header, text_header

REFUSED_PREFLIGHT = "CORS origin not allowed"


class CORSGuardMiddleware:
    """Starlette's CORSMiddleware for allowed origins; no CORS headers at all for other origins."""

    def __init__(
        self,
        app: ASGIApp,
        origins: Sequence[str],
        *,
        allow_methods: Sequence[str] = ("*",),
        allow_headers: Sequence[str] = ("*",),
        expose_headers: Sequence[str] = (),
        max_age: int = 600,
    ) -> None:
        # Canonical spelling, or Starlette's exact string match would silently miss a listed origin
        # (settings give canonical origins already; this keeps the middleware safe on its own).
        origins = cors_origins(";".join(origins))
        self.app = app
        self.allow_all = "*" in origins
        self.origins = frozenset(origins)
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=allow_methods,
            allow_headers=allow_headers,
            allow_credentials=bool(origins) and not self.allow_all,
            expose_headers=expose_headers,
            max_age=max_age,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route the request to Starlette's CORS, to a 403, or straight to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = text_header(scope, b"origin")
        if origin is None and not self.origins:
            await self.app(scope, receive, send)  # no CORS configured: no answer varies by Origin
        # The exact string comparison Starlette makes, so the two can never disagree.
        elif origin is None or self.allow_all or origin in self.origins:
            await self.cors(scope, receive, send)
        elif scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method") is not None:
            await JSONResponse({"detail": REFUSED_PREFLIGHT}, status_code=403)(scope, receive, send)
        else:
            await self.app(scope, receive, send)
