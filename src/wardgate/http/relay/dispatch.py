"""Every path wardgate does not own: authenticate, apply the upstream's access rule, then proxy.

`UpstreamDispatch` sits where the FastAPI application would: requests for paths one of wardgate's
own routes matches go to FastAPI; the rest go straight to the proxy, without the cost of FastAPI's
router and endpoint machinery on every proxied request. WebSocket upgrades go through FastAPI's
catch-all route below.

Unauthenticated browser navigations are sent to the sign-in page with a `redirect` back; other
requests get 401 JSON. Who may reach which upstream is `wardgate.proxy.admission`'s rule. A path with
`.` or `..` segments, or with an empty one (`//`), is refused rather than passed on, for every upstream:
the upstream would resolve or merge it into a path other than the one the access rules were checked
against (`//openai/config` went to the app, which read `/openai/config`: one of Open WebUI's admin
routes of the name wardgate keeps for itself, found by review).

A request for one of wardgate's own routes with a NUL character in its path or query (`%00`) is
refused (422, as FastAPI refuses any parameter it cannot take): no route takes one, and PostgreSQL
cannot compare text with one (psycopg refuses to send it, and the filter of a report or a session's
id in the path became a 500, found by review).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import compile_path
from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.types import Message, Receive, Scope, Send

from wardgate.errors import ApiError, AuthenticationError, PermissionDeniedError, StoreUnavailableError
from wardgate.http.cookies import clear_token_cookie
from wardgate.http.deps import authenticate_caller, gateway, site
from wardgate.http.errors import error_response, unexpected_error_response
from wardgate.http.middleware.request_metrics import ROUTE_CLASS_KEY
from wardgate.http.relay.models import forward_model_call
from wardgate.http.relay.streaming import ReverseProxy
from wardgate.http.routes.oauth import signout_redirect_url
from wardgate.identity.authentication import Caller, KeyPrincipal, Principal
from wardgate.proxy.acting import NO_PERSON, Acting, ForwardedUser, act_for, is_service_key, named_email
from wardgate.proxy.admission import admit
from wardgate.proxy.models import classify
from wardgate.proxy.upstreams import Upstream

router = APIRouter(include_in_schema=False)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NUL_REFUSED = "The address holds a NUL character (%00), which no value here may contain."
_UNNAMED = partial(re.compile(r"\(\?P<\w+>").sub, "(?:")


def _is_navigation(request: Request) -> bool:
    if request.method not in ("GET", "HEAD"):
        return False
    mode = request.headers.get("sec-fetch-mode")
    return mode == "navigate" if mode else "text/html" in request.headers.get("accept", "")


def _nul_in(scope: Scope) -> str | None:
    """Where the request's address holds a NUL ("path" or "query"; raw ones never pass the server's
    parser), or None."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope["query_string"]
    return "query" if b"%00" in query or b"\x00" in query else None


def has_dot_segment(path: str) -> bool:
    """Whether a (decoded) path has a `.` or `..` segment, which an upstream would resolve away."""
    return any(segment in (".", "..") for segment in path.split("/"))


def path_refusal(path: str) -> str | None:
    """Why a decoded path may not be passed on to an upstream (it would read another path), or None."""
    if has_dot_segment(path):
        return "Paths with '.' or '..' segments are refused."
    if "//" in path:  # merged by the upstream's router, or by a slash-merging proxy before it
        return "Paths with empty segments are refused."
    return None


class UpstreamDispatch:
    """HTTP requests for paths no wardgate route owns go to the proxy; everything else to FastAPI.

    Owned paths are the templates `build_routes` records in `app.state.owned_paths`.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        app_takes_root = app.state.site.has_app and not app.state.site.prefix  # "/" is then the app's
        # One alternation of Starlette's own route patterns (anchored; group names dropped, as they
        # repeat): one match per request instead of one per route.
        patterns = [
            _UNNAMED(compile_path(path)[0].pattern)
            for path in app.state.owned_paths
            if not (app_takes_root and path == "/")
        ]
        self._owned = re.compile("|".join(f"(?:{pattern})" for pattern in patterns) or r"(?!)")

    def owns(self, path: str) -> bool:
        """Whether one of wardgate's own routes (pages, API, static files) matches `path`."""
        return self._owned.match(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.owns(scope["path"]):
            where = _nul_in(scope) if scope["type"] == "http" else None
            if where is not None:  # a parameter no route can take: answered as FastAPI answers those
                problem = {"loc": [where], "msg": NUL_REFUSED, "type": "value_error"}
                await JSONResponse({"detail": [problem]}, status_code=422)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        upstream = self.app.state.gateway.upstreams.route(scope["path"])
        if upstream is None:
            scope[ROUTE_CLASS_KEY] = "other"
            await self.app(scope, receive, send)  # FastAPI's 404
            return
        scope[ROUTE_CLASS_KEY] = f"relay:{upstream.name}"  # upstream names are configured: bounded
        scope["app"] = self.app  # as Starlette sets it: the routes' helpers read app.state
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        request = Request(scope, receive)
        try:
            response = await _proxy(request, upstream, tracked)
        except (ApiError, StoreUnavailableError, HTTPException) as exc:
            response = error_response(exc)
        except Exception as exc:
            if started:
                raise
            response = unexpected_error_response(exc)
        if response is not None:
            await response(scope, receive, send)


async def _proxy(request: Request, upstream: Upstream, send: Send) -> Response | None:
    """A refusal to send, or None once the proxy has written the upstream's answer itself."""
    if request.method not in METHODS:
        return JSONResponse(
            {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(sorted(METHODS))}
        )
    path: str = request.scope["path"]  # decoded once; request.url.path would re-parse a decoded "?"
    refusal = path_refusal(path)
    if refusal is not None:
        return JSONResponse({"detail": refusal}, status_code=400)
    try:
        principal = await authenticate_caller(request, prefer_cookie=not upstream.strips_authorization)
    except AuthenticationError:
        if _is_navigation(request):
            target = quote(path + (f"?{request.url.query}" if request.url.query else ""), safe="/")
            return RedirectResponse(site(request).at(f"/auth?redirect={target}"), status_code=303)
        raise
    proxy: ReverseProxy = request.app.state.proxy
    chat_id = None
    if is_service_key(principal):  # its call goes on as the person it names
        acting = await _acting(request, principal, upstream)
        principal, chat_id = acting.caller, acting.chat_id
    admit(principal, upstream, path)
    if upstream.name == "app" and path == site(request).app_signout_path and isinstance(principal, Principal):
        return await sign_out_through_app(request, principal, upstream)
    call = classify(upstream.name, request.method, path[len(upstream.mount) :])
    if call is not None:
        await forward_model_call(request, principal, upstream, call, send, chat_id=chat_id)
        return None
    await proxy.forward(request, principal, upstream, send)
    return None


async def _acting(request: Request, caller: Caller, upstream: Upstream) -> Acting:
    """Who the call is for (`wardgate.proxy.acting`); a service key's refusal is audited like a
    refused key's (at most once a minute per key and reason)."""
    gw = gateway(request)
    forwarded = request.app.state.proxy.rules.forwarded
    try:
        acting = await act_for(caller, upstream.name, request.headers, forwarded, gw.registry)
        if acting.caller is not caller:
            person = acting.caller.user
            if gw.mfa.enrolment_required(person):
                # As if they had called directly: such an account reaches nothing until it enrols.
                raise PermissionDeniedError(
                    f"The account of {person.email} must set up a second factor first.",
                    code="service_key_person",
                )
            if isinstance(caller, KeyPrincipal):
                within = partial(gw.api_keys.within_person_rate, caller.key, person)
                if gw.api_keys.limits_in_memory:
                    within()
                else:  # the count waits on Redis or the workers' shared file: not on the event loop
                    await anyio.to_thread.run_sync(within)
    except ApiError as exc:
        if isinstance(caller, KeyPrincipal):
            refusal = partial(gw.api_keys.record_refusal, person=_named(request.headers, forwarded))
            await anyio.to_thread.run_sync(refusal, exc.code, caller.key)
        raise
    return acting


def _named(headers: Mapping[str, str], forwarded: ForwardedUser) -> str | None:
    """For the audit of a refused service-key call: the address it named, when one verifies."""
    try:
        return named_email(headers, forwarded)
    except ApiError:
        return None


async def sign_out_through_app(request: Request, principal: Principal, upstream: Upstream) -> Response:
    """The app's own sign-out (Open WebUI's menu posts to `UPSTREAM_SIGNOUT_PATH`) ends the wardgate
    session too: otherwise the next page would sign the person straight back in through the
    identity headers. The app is told first (it ends its own session and clears its cookies, which
    are passed on); then the wardgate session is revoked everywhere, its cookie cleared, and the
    answer's `redirect_url` — where Open WebUI sends the browser — is the provider's end-session
    page for a single sign-on session, else wardgate's sign-in page."""
    gw = gateway(request)
    proxy: ReverseProxy = request.app.state.proxy
    answer = _Collected()
    await proxy.forward(request, principal, upstream, answer.send)
    redirect = await signout_redirect_url(request, gw, principal.claims)
    await anyio.to_thread.run_sync(gw.accounts.signout, principal.claims)
    response = JSONResponse(
        {"status": True, "redirect_url": redirect or site(request).at("/auth?notice=signed-out")},
        headers={"Cache-Control": "no-store"},
    )
    response.raw_headers.extend(answer.cookies)  # the app's own cookies, ended as it asked
    clear_token_cookie(response, request)
    return response


class _Collected:
    """An answer kept rather than sent: only the cookies it sets are used (bounded in size)."""

    def __init__(self) -> None:
        self.cookies: list[tuple[bytes, bytes]] = []

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            set_cookies = [(k, v) for k, v in message.get("headers", []) if k.lower() == b"set-cookie"]
            self.cookies = set_cookies[:32]


@router.websocket("/{path:path}")
async def proxy_websocket(websocket: WebSocket, path: str) -> None:
    """Authenticate and admit the upgrade, then relay frames; closed (1008) within a second of the
    caller no longer being admitted: session or key revoked, account disabled or demoted, a group
    the upstream requires removed, or no store able to tell (fail closed)."""
    gw = gateway(websocket)
    path = websocket.scope["path"]  # the whole decoded path (the parameter lacks the leading "/")
    upstream = gw.upstreams.route(path)
    if upstream is None or path_refusal(path) is not None:
        await websocket.close(code=WS_1008_POLICY_VIOLATION)
        return
    try:
        principal = await authenticate_caller(websocket, prefer_cookie=not upstream.strips_authorization)
        if is_service_key(principal):
            # It acts for a person per call; a socket names nobody. Audited as its calls' refusals.
            await anyio.to_thread.run_sync(gw.api_keys.record_refusal, "service_key_person", principal.key)
            raise PermissionDeniedError(NO_PERSON, code="service_key_person")
        admit(principal, upstream, path)
        if classify(upstream.name, "GET", path[len(upstream.mount) :]) is not None:
            gw.model_rules.require_manager(principal)  # a realtime model session: never metered
    except (ApiError, StoreUnavailableError):
        await websocket.close(code=WS_1008_POLICY_VIOLATION)
        return

    async def still_admitted() -> bool:
        """The whole admission again, on the caller as it stands now (role, groups, key, session)."""
        try:
            admit(await gw.authenticator.refresh(principal), upstream, path)
        except (ApiError, StoreUnavailableError):
            return False
        return True

    proxy: ReverseProxy = websocket.app.state.proxy
    # The WebSocket client library (websockets) is loaded with the first relayed socket.
    from wardgate.http.relay.websocket import relay_websocket

    await relay_websocket(websocket, principal, upstream, proxy, still_admitted)
