"""Open WebUI's auth API under /api/v1/auths: sign-up, sign-in, sign-out, password, sessions."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from urllib.parse import urlencode

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response

from wardgate.errors import AuthenticationError, BadRequestError, PermissionDeniedError
from wardgate.http.cookies import MFA_COOKIE, clear_mfa_cookie, clear_token_cookie, set_token_cookie
from wardgate.http.deps import (
    ClientDep,
    CurrentUser,
    FreshAdmin,
    FreshUser,
    GatewayDep,
    SiteDep,
    authenticate,
    read_credential,
)
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.routes.oauth import signout_redirect_url
from wardgate.http.schemas import (
    AddedUser,
    AddUserForm,
    LdapForm,
    MfaRequiredResult,
    SessionInfo,
    SessionUser,
    SigninForm,
    SignoutResult,
    SignupForm,
    UpdatePasswordForm,
)
from wardgate.http.site import Site
from wardgate.identity.records import MfaRequired, SignedIn
from wardgate.sessions.records import UserState

router = APIRouter(prefix="/api/v1/auths", tags=["auths"], responses=ERROR_RESPONSES)


def session_user(user: UserState, token: str, expires_at: int | None) -> SessionUser:
    """The Open WebUI `SessionUserInfo` / `SigninResult` shape."""
    return SessionUser(
        token=token,
        expires_at=expires_at,
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        profile_image_url=user.profile_image_url,
    )


def signed_in(result: SignedIn, request: Request, response: Response) -> SessionUser:
    """The session response, its cookie set (and a finished pending sign-in's cookie cleared)."""
    set_token_cookie(response, request, result.token)
    if MFA_COOKIE in request.cookies:
        clear_mfa_cookie(response, request)
    response.headers["Cache-Control"] = "no-store"
    return session_user(result.user, result.token.token, result.token.expires_at)


@router.get("/", response_model=SessionUser, summary="The signed-in user")
async def get_session_user(request: Request) -> Response:
    """The session user. The token is echoed only to callers that sent it in a header.

    The route every client polls: authentication is called directly and the body serialised once,
    because FastAPI's dependency solving and response validation cost more here than the check
    itself (24 of 94 µs, `bench/layers.py`). The check is the same `authenticate` as `CurrentUser`'s.
    """
    principal = await authenticate(request)
    token = principal.token if principal.via == "header" else ""
    body = session_user(principal.user, token, principal.claims.expires_at).model_dump_json()
    return Response(body, media_type="application/json", headers=_NO_STORE)


_NO_STORE = {"Cache-Control": "no-store"}


def mfa_required(result: MfaRequired, response: Response) -> MfaRequiredResult:
    """The answer for a first factor that leads to a second: no token, no cookie."""
    response.headers["Cache-Control"] = "no-store"
    return MfaRequiredResult(mfa_token=result.token, methods=list(result.methods))


@router.post(
    "/signin", response_model=SessionUser | MfaRequiredResult, summary="Sign in with email and password"
)
async def signin(
    form: SigninForm, request: Request, response: Response, gw: GatewayDep, site: SiteDep, client: ClientDep
) -> SessionUser | MfaRequiredResult:
    """Check the password and start a session (token in the body and in an HttpOnly cookie). For an
    account with a second factor: `{"mfa_required": true, "mfa_token", "methods"}` and no session,
    which `POST /api/v1/auths/mfa/verify` (or a passkey) completes."""
    signin = partial(gw.accounts.signin, form.email, form.password, client)
    return await _password_signin(signin, site, request, response)


@router.post(
    "/ldap", response_model=SessionUser | MfaRequiredResult, summary="Sign in with the directory (LDAP)"
)
async def ldap_signin(
    form: LdapForm, request: Request, response: Response, gw: GatewayDep, site: SiteDep, client: ClientDep
) -> SessionUser | MfaRequiredResult:
    """Open WebUI's directory sign-in: `{user, password}` checked against LDAP_SERVER_HOST; the same
    answer as `/signin` (a second factor included). 503 when the directory cannot be reached."""
    if gw.ldap is None:
        raise BadRequestError("Directory (LDAP) sign-in is not enabled on this site.", code="ldap_disabled")
    signin = partial(gw.ldap.signin, form.user, form.password, client)
    return await _password_signin(signin, site, request, response)


async def _password_signin(
    signin: Callable[[], SignedIn | MfaRequired], site: Site, request: Request, response: Response
) -> SessionUser | MfaRequiredResult:
    """A password sign-in (wardgate's or the directory's, both off with ENABLE_PASSWORD_AUTH=false):
    the session, or the second step."""
    if not site.password_auth:
        raise PermissionDeniedError(
            "Password sign-in is disabled on this site.", code="password_auth_disabled"
        )
    result = await anyio.to_thread.run_sync(signin)
    if isinstance(result, MfaRequired):
        return mfa_required(result, response)
    return signed_in(result, request, response)


@router.post("/signup", response_model=SessionUser, summary="Create an account")
async def signup(
    form: SignupForm, request: Request, response: Response, gw: GatewayDep, client: ClientDep
) -> SessionUser:
    """Create an account and sign it in; the first account ever becomes the admin."""
    result = await anyio.to_thread.run_sync(gw.accounts.signup, form.name, form.email, form.password, client)
    return signed_in(result, request, response)


async def _signout(request: Request, response: Response, gw: GatewayDep) -> SignoutResult:
    try:
        credential = read_credential(request)
        claims = gw.codec.verify(credential.value) if credential else None
    except AuthenticationError:
        claims = None  # nothing valid to revoke; still clear the cookie
    # Single sign-on sessions also end at the provider (RP-Initiated Logout): its end-session URL.
    redirect_url = await signout_redirect_url(request, gw, claims)
    if claims is not None:
        await anyio.to_thread.run_sync(gw.accounts.signout, claims)
    clear_token_cookie(response, request)
    response.headers["Cache-Control"] = "no-store"
    return SignoutResult(redirect_url=redirect_url)


@router.post("/signout", response_model=SignoutResult, summary="Sign out (revokes this session)")
async def signout_post(request: Request, response: Response, gw: GatewayDep) -> SignoutResult:
    """Revoke the presented session everywhere and clear the cookie."""
    return await _signout(request, response, gw)


@router.get("/signout", response_model=SignoutResult, summary="Sign out (Open WebUI's GET form)")
async def signout_get(request: Request, response: Response, gw: GatewayDep) -> SignoutResult:
    """As POST. Signed out by its cookie, only from this very site: a GET carries no CSRF check, and
    the cookie rides along from sibling subdomains (`Sec-Fetch-Site: same-site`) as from elsewhere.
    Clients that send their token in a header (Open WebUI's) are unaffected."""
    by_cookie = request.headers.get("authorization") is None
    if by_cookie and request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise PermissionDeniedError("Sign-out refused: it did not come from this site.", code="csrf")
    return await _signout(request, response, gw)


@router.post("/update/password", response_model=bool, summary="Change your password")
async def update_password(
    form: UpdatePasswordForm, principal: FreshUser, request: Request, response: Response, gw: GatewayDep
) -> bool:
    """Change the password; every session of the account ends, this one included."""
    await anyio.to_thread.run_sync(
        gw.accounts.change_password, principal.user.id, form.password, form.new_password
    )
    clear_token_cookie(response, request)
    return True


@router.post("/add", response_model=AddedUser, summary="Create an account (admin)")
async def add_user(form: AddUserForm, _admin: FreshAdmin, gw: GatewayDep) -> AddedUser:
    """Create an account with a role; unlike Open WebUI no session token for it is handed out."""
    create = partial(gw.accounts.create_user, form.name, form.email, form.password, role=form.role)
    user = await anyio.to_thread.run_sync(create)
    return AddedUser(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        profile_image_url=user.profile_image_url,
    )


@router.get("/sessions", response_model=list[SessionInfo], summary="Your signed-in sessions")
async def list_sessions(
    request: Request,
    response: Response,
    principal: CurrentUser,
    gw: GatewayDep,
    cursor: str | None = Query(None, max_length=200, description="from the previous page's Link header"),
    limit: int = Query(50, ge=1, le=200),
) -> list[SessionInfo]:
    """The caller's live sessions, newest first, a page at a time: when there are more, a
    `Link: <…>; rel="next"` header (RFC 8288) names the next page."""
    fetch = partial(gw.directory.sessions_of, principal.user.id, cursor=cursor, limit=limit)
    found = await anyio.to_thread.run_sync(fetch)
    if found.next_cursor is not None:
        following = urlencode({"cursor": found.next_cursor, "limit": limit})
        response.headers["Link"] = f'<{request.url.path}?{following}>; rel="next"'  # relative: no Host
    return [
        SessionInfo(
            id=r.id,
            current=r.id == principal.claims.session_id,
            auth_method=r.auth_method,
            created_at=r.created_at,
            expires_at=r.expires_at,
            last_seen_at=r.last_seen_at,
            ip=r.ip,
            user_agent=r.user_agent,
        )
        for r in found.rows
    ]


@router.delete("/sessions/{session_id}", response_model=bool, summary="Sign out one of your sessions")
async def revoke_session(session_id: str, principal: CurrentUser, gw: GatewayDep) -> bool:
    """Revoke one of the caller's own sessions (404 for anyone else's)."""
    await anyio.to_thread.run_sync(gw.accounts.revoke_session, principal.user.id, session_id)
    return True


@router.post("/sessions/revoke", response_model=bool, summary="Sign out everywhere")
async def revoke_all(principal: CurrentUser, request: Request, response: Response, gw: GatewayDep) -> bool:
    """End every session of the caller, this one included."""
    await anyio.to_thread.run_sync(gw.accounts.revoke_all_sessions, principal.user.id)
    clear_token_cookie(response, request)
    return True
