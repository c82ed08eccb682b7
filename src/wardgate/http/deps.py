"""Dependencies: the HTTP side of authentication — read the credential, hand it to the core.

Turning a credential into a caller is `wardgate.identity.authentication`'s job; this module only
reads it from the request and offers the results to routes as FastAPI dependencies:
`CurrentUser` (any signed-in person), `VerifiedUser` (user or admin) and `AdminUser` take sessions
only; `authenticate_caller` (the relay) also takes API keys.

Credential order: `Authorization`, then the API-key header, then the cookie. Headers come first so
that the credential that makes a request exempt from the CSRF check (the CSRF middleware) is the one
that authenticates it; a cookie never rides on a header's exemption.
"""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends
from starlette.requests import HTTPConnection

from wardgate.errors import (
    ApiError,
    AuthenticationError,
    EnrolmentRequiredError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from wardgate.gateway import Gateway
from wardgate.http.site import Site
from wardgate.identity.authentication import KEYS_NOT_HERE, TOKEN_COOKIE, Caller, Credential, Principal
from wardgate.identity.records import ClientInfo
from wardgate.identity.rules import require_admin, require_approved
from wardgate.observability.metrics import observe_authentication, refusal_outcome


def gateway(conn: HTTPConnection) -> Gateway:
    """The process's services."""
    found: Gateway = conn.app.state.gateway
    return found


def site(conn: HTTPConnection) -> Site:
    """The deployment as the web layer sees it."""
    found: Site = conn.app.state.site
    return found


def client_info(conn: HTTPConnection) -> ClientInfo:
    """Client IP (already resolved by the trusted-proxy middleware) and user agent."""
    host = conn.client.host if conn.client else None
    return ClientInfo(ip=host, user_agent=conn.headers.get("user-agent"))


def read_credential(conn: HTTPConnection) -> Credential | None:
    """`Authorization: Bearer`, then the API-key header, then the `token` cookie.

    A header that is present decides, even when its value is unusable (401): the CSRF check exempts
    any request carrying it, so the cookie must not be used instead.
    """
    authorization = conn.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Unsupported authorization header; use 'Bearer <token>'.")
        return Credential(value.strip(), "header")
    api_key = conn.headers.get(site(conn).api_key_header)
    if api_key:
        return Credential(api_key.strip(), "api-key-header")
    cookie = session_cookie(conn)
    return Credential(cookie, "cookie") if cookie else None


def cookie_values(conn: HTTPConnection, cookie: str) -> set[str]:
    """The different values the request carries for one cookie name.

    A browser sends two when a second was set beside wardgate's with another Domain or Path (cookie
    tossing from a sibling subdomain, RFC 6265bis §8.6): whichever is taken could be the attacker's.
    """
    header = conn.headers.get("cookie")
    if not header or cookie not in header:
        return set()
    # Split as Starlette's cookie_parser splits (on ";", names trimmed), so the count matches its view.
    return {
        value.strip()
        for name, _, value in (pair.partition("=") for pair in header.split(";"))
        if name.strip() == cookie
    }


def session_cookie(conn: HTTPConnection) -> str | None:
    """The `token` cookie, or None. Two different ones are refused (401), not resolved: taking either
    could sign the user in to an account the attacker chose (`cookie_values`)."""
    values = cookie_values(conn, TOKEN_COOKIE)
    if not values:
        return None
    if len(values) > 1:
        raise AuthenticationError(
            "Two different session cookies were sent (one may come from another site on this domain); "
            "clear this site's cookies and sign in again."
        )
    return conn.cookies.get(TOKEN_COOKIE)


ENROL_FIRST = (
    "Your role requires a second factor: set up an authenticator app or a passkey on your account "
    "page before doing anything else."
)


def _not_measured(outcome: str) -> None:
    """Nobody may read the metrics: authentications are not counted."""


async def _caller(
    conn: HTTPConnection, *, keys_allowed: bool, prefer_cookie: bool = False, enrolling: bool = False
) -> Caller:
    peer = conn.scope.get("client")
    ip = peer[0] if peer else None  # as client_info(): already resolved by the trusted-proxy middleware
    gw = gateway(conn)
    observe = observe_authentication if gw.measured else _not_measured
    try:
        cookie = session_cookie(conn) if prefer_cookie else None
        credential = Credential(cookie, "cookie") if cookie else read_credential(conn)
    except AuthenticationError:  # an unusable header, two session cookies
        observe("invalid")
        raise
    try:
        caller = await gw.authenticator.authenticate(credential, ip=ip, keys_allowed=keys_allowed)
    except ApiError as exc:
        observe(refusal_outcome(exc.status_code, exc.code))
        raise
    except StoreUnavailableError:
        observe("unavailable")
        raise
    observe("session" if isinstance(caller, Principal) else "api_key")
    conn.state.principal = caller
    # MFA_REQUIRED_ROLES: such an account, without a factor, reaches nothing but its enrolment
    # (an API key of it neither). Pure CPU: the view carries whether the account has a factor.
    claims = caller.claims if isinstance(caller, Principal) else None
    if not enrolling and gw.mfa.enrolment_required(caller.user, claims):
        raise EnrolmentRequiredError(ENROL_FIRST)
    return caller


async def authenticate(conn: HTTPConnection) -> Principal:
    """A person's session, checked against the revocation view (or the database if stale).

    API keys are refused here (403): this is the dependency of wardgate's own routes.
    """
    return await _principal(conn, enrolling=False)


async def authenticate_enrolling(conn: HTTPConnection) -> Principal:
    """As `authenticate`, also for an account that must enrol a second factor first: the routes
    that show, enrol and verify factors."""
    return await _principal(conn, enrolling=True)


async def _principal(conn: HTTPConnection, *, enrolling: bool) -> Principal:
    caller = await _caller(conn, keys_allowed=False, enrolling=enrolling)
    if not isinstance(caller, Principal):  # unreachable: keys are refused above
        raise PermissionDeniedError(KEYS_NOT_HERE, code="api_key_not_allowed_here")
    return caller


async def optional_principal(conn: HTTPConnection, *, enrolling: bool = False) -> Principal | None:
    """The signed-in person, or None (pages redirect instead of answering 401).

    An account that must enrol a second factor raises EnrolmentRequiredError unless `enrolling`:
    pages are sent to the enrolment on /account by its handler (`wardgate.http.errors`)."""
    try:
        return await _principal(conn, enrolling=enrolling)
    except AuthenticationError:
        return None


async def authenticate_caller(conn: HTTPConnection, *, prefer_cookie: bool = False) -> Caller:
    """A session or an API key, for routes that forward to upstreams.

    The route must then ask `wardgate.proxy.admission.admit`. `prefer_cookie` is for the app
    upstream: a browser there carries wardgate's cookie *and* the app's own `Authorization` header
    (Open WebUI's JWT), which belongs to the app and is passed through. That request is CSRF-exempt
    because of the header, which is sound: a cross-site page cannot attach `Authorization` without a
    CORS preflight that wardgate refuses for unlisted origins.
    """
    return await _caller(conn, keys_allowed=True, prefer_cookie=prefer_cookie)


async def require_verified(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A user or admin; pending accounts reach nothing but their own session."""
    require_approved(principal.user)
    return principal


async def require_admin_user(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin."""
    require_admin(principal.user)
    return principal


async def _stepped_up(conn: HTTPConnection, principal: Principal) -> Principal:
    """For sensitive changes: an account with a second factor must have shown it in this session
    within MFA_STEP_UP_MAX_AGE (403 `step_up_required` otherwise; `POST /api/v1/auths/mfa/step-up`)."""
    if principal.user.mfa:  # accounts without a factor: nothing to ask, no query
        check = gateway(conn).mfa.require_step_up
        await anyio.to_thread.run_sync(check, principal.user, principal.claims)
    return principal


async def require_fresh_user(
    conn: HTTPConnection, principal: Annotated[Principal, Depends(authenticate)]
) -> Principal:
    """A signed-in person who, if they have a second factor, showed it recently."""
    return await _stepped_up(conn, principal)


async def require_fresh_verified(
    conn: HTTPConnection, principal: Annotated[Principal, Depends(require_verified)]
) -> Principal:
    """A user or admin who, if they have a second factor, showed it recently."""
    return await _stepped_up(conn, principal)


async def require_fresh_admin(
    conn: HTTPConnection, principal: Annotated[Principal, Depends(require_admin_user)]
) -> Principal:
    """An admin who, if they have a second factor, showed it recently (every change of a user)."""
    return await _stepped_up(conn, principal)


CurrentUser = Annotated[Principal, Depends(authenticate)]
FreshUser = Annotated[Principal, Depends(require_fresh_user)]
FreshVerifiedUser = Annotated[Principal, Depends(require_fresh_verified)]
FreshAdmin = Annotated[Principal, Depends(require_fresh_admin)]
EnrollingUser = Annotated[Principal, Depends(authenticate_enrolling)]
VerifiedUser = Annotated[Principal, Depends(require_verified)]
AdminUser = Annotated[Principal, Depends(require_admin_user)]
CallerDep = Annotated[Caller, Depends(authenticate_caller)]


async def _gateway_dependency(conn: HTTPConnection) -> Gateway:
    return gateway(conn)


async def _site_dependency(conn: HTTPConnection) -> Site:
    return site(conn)


async def _client_dependency(conn: HTTPConnection) -> ClientInfo:
    return client_info(conn)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in its thread pool, a hop per
# request that cost /health half its throughput (bench/auth_overhead.py).
GatewayDep = Annotated[Gateway, Depends(_gateway_dependency)]
SiteDep = Annotated[Site, Depends(_site_dependency)]
ClientDep = Annotated[ClientInfo, Depends(_client_dependency)]
