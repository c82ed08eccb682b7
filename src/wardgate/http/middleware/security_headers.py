"""Security headers on every response: pure ASGI, values pre-encoded once in `__init__`.

A header is added only when the response did not set it already: a route's own `Cache-Control` or
`Content-Security-Policy` always wins (Open WebUI overwrote them).

Proxied responses. The relay (`wardgate.http.relay`) marks the request
with `request.state.wardgate_proxied = True` (`PROXIED_STATE_KEY`) before it starts its response.
Such responses keep the upstream's headers and, by default, only get HSTS. With
`enforce_on_proxied=True` they also get `HeaderPolicy.proxied`: every configured header the upstream
did not set, except the defaults that describe wardgate's own pages (its CSP, `Cache-Control` and
`Permissions-Policy` defaults), which would break the upstream UI. Values the administrator set
explicitly are included: they apply to every response.

`Server`, `X-Powered-By` and `X-Process-Time` are removed from every response passing through (an
upstream Open WebUI sends `X-Process-Time`, a timing side channel). uvicorn adds its own `Server`
header after the app, out of our reach: run it with `server_header=False`.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wardgate.security.headers import HeaderPairs, HeaderPolicy

PROXIED_STATE_KEY = "wardgate_proxied"

_LEAKY = frozenset({b"server", b"x-powered-by", b"x-process-time"})
# Documents a browser renders as a page, where scripts run: they get the HTML header set.
_HTML_TYPES = frozenset({b"text/html", b"application/xhtml+xml"})
_HSTS = b"strict-transport-security"


def _is_html(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() in _HTML_TYPES
    return False


class SecurityHeadersMiddleware:
    """Add the configured security headers to HTTP responses that did not set them."""

    def __init__(self, app: ASGIApp, policy: HeaderPolicy, *, enforce_on_proxied: bool = False) -> None:
        self.app = app
        proxied = policy.proxied if enforce_on_proxied else ()
        hsts: HeaderPairs = ((_HSTS, policy.hsts),) if policy.hsts else ()
        # (kind, is_https) -> headers to add; HSTS only over HTTPS (RFC 6797 §7.2).
        self._sets: dict[tuple[str, bool], HeaderPairs] = {}
        for kind, pairs in (("html", policy.html), ("other", policy.other), ("proxied", proxied)):
            self._sets[kind, False] = pairs
            self._sets[kind, True] = pairs + hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, stamping headers on `http.response.start`."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Created here so that the route's `request.state` and this middleware share one dict.
        state: dict[str, Any] = scope.setdefault("state", {})
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = self._stamped(message, proxied=bool(state.get(PROXIED_STATE_KEY)), https=https)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _stamped(self, message: Message, *, proxied: bool, https: bool) -> Message:
        headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() not in _LEAKY]
        present = {name.lower() for name, _ in headers}
        kind = "proxied" if proxied else "html" if _is_html(headers) else "other"
        headers.extend(pair for pair in self._sets[kind, https] if pair[0] not in present)
        return {**message, "headers": headers}
