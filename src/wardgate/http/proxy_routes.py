"""Every path wardgate does not own: authenticate, apply the upstream's access rule, then proxy.

Unauthenticated browser navigations are sent to the sign-in page with a `redirect` back; other
requests get 401 JSON. Pending and disabled users reach nothing; each upstream lists the roles (and
optionally groups) it admits; API keys can be narrowed further (`KeyPrincipal.may_reach`).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse, Response

from wardgate.errors import ApiError, AuthenticationError, PermissionDeniedError, StoreUnavailableError
from wardgate.http.deps import Caller, authenticate_caller, gateway, still_valid
from wardgate.http.proxy import ReverseProxy
from wardgate.http.ws_proxy import POLICY_VIOLATION, relay_websocket
from wardgate.proxy.upstreams import Upstream

router = APIRouter(include_in_schema=False)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _is_navigation(request: Request) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    mode = request.headers.get("sec-fetch-mode")
    return mode == "navigate" if mode else "text/html" in request.headers.get("accept", "")


def _admit(principal: Caller, upstream: Upstream, path: str) -> None:
    user = principal.user
    if user.role == "pending":
        raise PermissionDeniedError(
            "Your account is pending approval by an administrator.", code="pending_approval"
        )
    if not upstream.admits(user.role, getattr(user, "groups", ())):
        raise PermissionDeniedError(
            f"Your account may not use the {upstream.name} service.", code="upstream_denied"
        )
    if not principal.may_reach(upstream.name, path):
        raise PermissionDeniedError("This API key may not be used for this path.", code="api_key_scope")


@router.api_route("/{path:path}", methods=METHODS)
async def proxy_http(request: Request, path: str) -> Response:
    """Proxy to the upstream that serves this path, or 404 when none does."""
    gw = gateway(request)
    upstream = gw.upstreams.route(request.url.path)
    if upstream is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    try:
        principal = await authenticate_caller(request, prefer_cookie=not upstream.strips_authorization)
    except AuthenticationError:
        if _is_navigation(request):
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="/"
            )
            return RedirectResponse(f"{gw.settings.route_prefix}/auth?redirect={target}", status_code=303)
        raise
    _admit(principal, upstream, request.url.path)
    proxy: ReverseProxy = request.app.state.proxy
    return await proxy.forward(request, principal, upstream)


@router.websocket("/{path:path}")
async def proxy_websocket(websocket: WebSocket, path: str) -> None:
    """Authenticate the upgrade, then relay frames; closed when the session is revoked."""
    gw = gateway(websocket)
    upstream = gw.upstreams.route(websocket.url.path)
    if upstream is None:
        await websocket.close(code=POLICY_VIOLATION)
        return
    try:
        principal = await authenticate_caller(websocket, prefer_cookie=not upstream.strips_authorization)
        _admit(principal, upstream, websocket.url.path)
    except (ApiError, StoreUnavailableError):
        await websocket.close(code=POLICY_VIOLATION)
        return

    proxy: ReverseProxy = websocket.app.state.proxy
    await relay_websocket(websocket, principal, upstream, proxy, lambda: still_valid(gw, principal))
