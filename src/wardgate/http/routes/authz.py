"""Forward auth for reverse proxies: `GET /api/v1/authz/forward-auth` (Traefik, Caddy) and
`GET /api/v1/authz/auth-request` (nginx). Route names fixed: proxies' configurations name them.

The proxy passes the client's headers (its `token` cookie, `Authorization`, the API-key header) and
describes the original request: Traefik and Caddy in `X-Forwarded-Method`, `-Proto`, `-Host` and
`-Uri` (the scheme and host reach wardgate through the trusted-proxy layer, so the proxy must be in
`FORWARDED_ALLOW_IPS`; from anyone else the decision is about wardgate's own host, which no site
names: 403), nginx in `X-Original-URL` and `X-Original-Method`. nginx accepts only 2xx, 401 and 403
from its auth endpoint, so `auth-request` never redirects: its 401 names the sign-in page (with the
way back, encoded) in `Location`, which nginx's `error_page 401 =302` sends the browser to.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from wardgate.errors import ApiError, AuthenticationError
from wardgate.http.deps import authenticate_caller, site
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.identity.authentication import Caller
from wardgate.proxy.forward_auth import Decision, Original, decide

router = APIRouter(prefix="/api/v1/authz", tags=["forward auth"], responses=ERROR_RESPONSES)
_OFF = Decision(404, "Forward auth is not configured (FORWARD_AUTH_FILE).")
MAX_ORIGINAL = 8192  # characters of the original URI or URL
# Never cut and then decided: what lies past the cut (`/../admin`) would go unseen while the proxy
# passes the whole address on (found by review).
_TOO_LONG = Decision(403, f"The original address is longer than {MAX_ORIGINAL} characters.")


async def _caller(request: Request) -> tuple[Caller | None, Decision | None]:
    """The caller behind the client's credential, or why there is none (401; 403 for an account
    that must enrol a second factor first; 429). The session cookie counts first: an
    `Authorization` header beside it belongs to the app (its own API token, Basic), not to wardgate."""
    try:
        return await authenticate_caller(request, prefer_cookie=True), None
    except AuthenticationError as exc:
        return None, Decision(401, exc.detail)
    except ApiError as exc:
        return None, Decision(exc.status_code, exc.detail)


def _answer(decision: Decision) -> Response:
    body = json.dumps({"detail": decision.detail}).encode() if decision.detail else b""
    response = Response(body, status_code=decision.status, media_type="application/json" if body else None)
    response.headers["Cache-Control"] = "no-store"
    if decision.location:
        response.headers["Location"] = decision.location
    response.raw_headers.extend((name.lower(), value) for name, value in decision.headers)
    return response


def _wants_page(request: Request, original: Original) -> bool:
    """A browser navigating (it accepts HTML), not a script: worth sending to the sign-in page."""
    return original.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


@router.get("/forward-auth", summary="Forward auth for Traefik and Caddy", include_in_schema=True)
async def forward_auth(request: Request) -> Response:
    """200 with identity headers, 302 to sign in (a browser), 401, or 403."""
    where = site(request)
    if where.forward_auth is None:
        return _answer(_OFF)
    headers = request.headers
    uri = headers.get("x-forwarded-uri", "/")
    if len(uri) > MAX_ORIGINAL:
        return _answer(_TOO_LONG)
    original = Original(
        method=headers.get("x-forwarded-method", "GET").upper()[:16],
        scheme=request.url.scheme,  # X-Forwarded-Proto, through the trusted-proxy layer
        host=headers.get("host", "").lower(),  # X-Forwarded-Host, likewise
        uri=uri or "/",
    )
    caller, refusal = await _caller(request)
    decision = decide(
        where.forward_auth,
        original,
        caller,
        refusal=refusal,
        sign_in=where.sign_in_url,
        redirect=_wants_page(request, original),
    )
    return _answer(decision)


@router.get("/auth-request", summary="Forward auth for nginx auth_request", include_in_schema=True)
async def auth_request(request: Request) -> Response:
    """200 with identity headers, 401 or 403 — never a redirect (nginx's `error_page` makes one)."""
    where = site(request)
    if where.forward_auth is None:
        return _answer(_OFF)
    headers = request.headers
    url = headers.get("x-original-url", "")
    if len(url) > MAX_ORIGINAL:
        return _answer(_TOO_LONG)
    original = Original.from_url(url, headers.get("x-original-method", "GET"))
    caller, refusal = await _caller(request)
    return _answer(decide(where.forward_auth, original, caller, refusal=refusal, sign_in=where.sign_in_url))
