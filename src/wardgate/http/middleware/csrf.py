"""CSRF defence: unsafe requests authenticated by cookie must come from this site.

Open WebUI relies on SameSite alone, which `SameSite=None` or a same-site sibling
origin defeats. wardgate verifies the source origin with standard headers (OWASP CSRF Prevention
Cheat Sheet, "Verifying Origin With Standard Headers"), plus Fetch Metadata where Origin is missing
or opaque (same sheet, "Fetch Metadata headers"):

- Safe methods (RFC 9110 §9.2.1: GET, HEAD, OPTIONS, TRACE) are never checked: they must not change
  state.
- A request carrying `Authorization` or the API-key header is exempt: a browser cannot attach those
  cross-origin without a CORS preflight, which `CORSGuardMiddleware` refuses for unknown origins.
- A request carrying the auth cookie must show `Origin` (or, when absent, the origin of `Referer`)
  equal to the site's origin or one of the trusted (CORS-listed) origins. A missing or `null`
  origin passes only with `Sec-Fetch-Site: same-origin`, a header pages cannot forge; this keeps
  forms working under `Referrer-Policy: no-referrer`, where browsers send `Origin: null`.
- Login paths are checked even without the cookie (login CSRF: signing the victim into the
  attacker's account). With neither Origin nor Referer the request is allowed unless
  `Sec-Fetch-Site: cross-site`: scripts send neither, while browsers send Origin on every POST.
- WebSocket handshakes carrying the cookie get the same origin check (cross-site WebSocket
  hijacking, OWASP WebSocket Security Cheat Sheet); a refused one is closed before it is accepted,
  which the server turns into an HTTP 403.

`*` in the trusted origins (CORS for everyone, without credentials) never trusts an origin here.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.config.network import origin_of

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
REFUSAL = (
    "Cross-site request refused (CSRF protection): the request's Origin does not match this site. "
    "API clients should send their credential in the Authorization header rather than a cookie."
)
_WEB_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1


def _required_origin(value: str, what: str) -> str:
    origin = origin_of(value)
    if origin is None:
        raise ValueError(f"{what} {value[:80]!r} is not an http(s) origin")
    return origin


def _path(path: str) -> str:
    return path.rstrip("/") or "/"


class CSRFMiddleware:
    """Refuse cookie-authenticated unsafe requests (and logins) whose origin is not this site's."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        site_origin: str | None,
        trusted_origins: Collection[str],
        cookie_name: str = "token",
        login_paths: Collection[str] = ("/api/v1/auths/signin", "/api/v1/auths/signup"),
        api_key_header: str = "x-api-key",
    ) -> None:
        self.app = app
        self.site_origin = _required_origin(site_origin, "site origin") if site_origin else None
        self.trusted = frozenset(_required_origin(o, "trusted origin") for o in trusted_origins if o != "*")
        self.cookie_name = cookie_name
        self.login_paths = frozenset(_path(path) for path in login_paths)
        self.api_key_header = api_key_header.lower()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check unsafe HTTP requests and WebSocket handshakes, then run the app."""
        if scope["type"] == "websocket" and not self._allowed(scope, Headers(scope=scope), login=False):
            await receive()  # the websocket.connect message
            await send({"type": "websocket.close", "code": _POLICY_VIOLATION})
            return
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            login = _path(scope["path"]) in self.login_paths
            if not self._allowed(scope, Headers(scope=scope), login=login):
                await JSONResponse({"detail": REFUSAL}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope, headers: Headers, *, login: bool) -> bool:
        if headers.get("authorization") or headers.get(self.api_key_header):
            return True
        cookies = cookie_parser("; ".join(headers.getlist("cookie")))
        has_cookie = self.cookie_name in cookies
        if not (has_cookie or login):
            return True
        claimed = headers.get("origin")
        if claimed is None:
            claimed = headers.get("referer")
        fetch_site = headers.get("sec-fetch-site")
        if claimed is not None and claimed != "null":
            return origin_of(claimed) in self._origins(scope, headers)
        if fetch_site == "same-origin":
            return True
        # Neither header: a script, not a browser (browsers send Origin on every POST), unless
        # Fetch Metadata says otherwise. Only a login may come this way; cookie requests may not.
        return claimed is None and not has_cookie and fetch_site != "cross-site"

    def _origins(self, scope: Scope, headers: Headers) -> frozenset[str]:
        """The origins this request may come from: the site's own and the trusted ones."""
        own = self.site_origin
        host = headers.get("host")
        if own is None and host:
            # Runs after TrustedProxyMiddleware, so scheme and Host are the client-facing ones.
            own = origin_of(f"{_WEB_SCHEMES.get(scope.get('scheme', 'http'), 'http')}://{host}")
        return (self.trusted | {own}) if own else self.trusted
