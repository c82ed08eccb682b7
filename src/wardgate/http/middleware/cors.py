"""CORS: Starlette's `CORSMiddleware` for the origins in `CORS_ALLOW_ORIGIN`, and nothing for the rest.

Open WebUI defaults to `*` with credentials, i.e. it reflects any origin with
`Access-Control-Allow-Credentials: true` (spec §9 #1; CVE-2026-56400). wardgate instead:

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

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.http.scope import header, text_header

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A DNS name or IPv4 address, or an IPv6 address (urlsplit's hostname drops the brackets).
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|[0-9a-f:.]*:[0-9a-f:.]*", re.ASCII)
_ORIGIN_SHAPE = re.compile(r"https?://[^/?#@\x00-\x20\x7f]+", re.IGNORECASE | re.ASCII)
_ORIGIN_FORM = "scheme://host[:port] with http or https and no path, e.g. https://chat.example.com"
REFUSED_PREFLIGHT = "CORS origin not allowed"


def origin_of(url: str) -> str | None:
    """The serialized origin (RFC 6454 §6.2) of an absolute http(s) URL, or None if it has none.

    Scheme and host are lower-cased and a default port is dropped, which is how browsers write the
    `Origin` header, so equal origins compare equal as strings.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or not _HOSTNAME.fullmatch(host):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_origin(entry: str) -> str:
    origin = origin_of(entry)
    # Anything beyond scheme://host[:port] (a path, even "/", a query, user info, or a control
    # character, which urlsplit silently drops) means the entry is not an origin: a browser's
    # Origin header would never equal it, and CORS would fail without a word.
    if origin is None or not _ORIGIN_SHAPE.fullmatch(entry):
        raise ValueError(f"CORS_ALLOW_ORIGIN entry {entry[:80]!r} is not an origin: expected {_ORIGIN_FORM}")
    return origin


def _canonical_origins(entries: Sequence[str]) -> list[str]:
    if "*" in entries:
        if len(entries) > 1:
            raise ValueError("CORS_ALLOW_ORIGIN: '*' allows every origin; it cannot be combined with a list")
        return ["*"]
    origins = [_parse_origin(entry) for entry in entries]
    return list(dict.fromkeys(origins))  # without duplicates, in the given order


def parse_cors_origins(value: str) -> list[str]:
    """Parse `CORS_ALLOW_ORIGIN` (`;`-separated origins, or `*`); ValueError naming a bad entry."""
    return _canonical_origins([entry.strip() for entry in value.split(";") if entry.strip()])


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
        # Canonical spelling, or Starlette's exact string match would silently miss a listed origin.
        origins = _canonical_origins(origins)
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
