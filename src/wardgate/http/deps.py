"""Dependencies: from a request to who is calling — the hot path, pure CPU unless the view is stale.

Two kinds of caller (`Caller`):

- `Principal`: a person's session, a JWT in `Authorization: Bearer` or in the `token` cookie.
  wardgate's own API and pages take only this (`authenticate`, `CurrentUser`, `VerifiedUser`,
  `AdminUser`): an API key is refused there with 403, so a stolen key cannot create keys, change
  the password or administer users.
- `KeyPrincipal`: a program's API key (`sk-...`) in `Authorization: Bearer` or in the header named
  by `CUSTOM_API_KEY_HEADER`. Both carriers lead to the same check (`_key_caller`), so no
  restriction can be skipped by choosing the other header (Open WebUI's CVE-2026-45339). Only the
  routes that forward to upstreams accept it (`authenticate_caller`); they ask
  `caller.may_reach(upstream, path)`, which applies the key's scopes and `API_KEYS_ALLOWED_ENDPOINTS`.

Credential order: `Authorization`, then the API-key header, then the cookie. Headers come first so
that the credential that makes a request exempt from the CSRF check (csrf.py) is the one that
authenticates it; a cookie never rides on a header's exemption.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import Depends
from starlette.requests import HTTPConnection

from wardgate.errors import ApiError, AuthenticationError, PermissionDeniedError
from wardgate.gateway import Gateway
from wardgate.identity.api_keys import Admitted
from wardgate.identity.key_material import KEY_PREFIX, ApiKeyState, KeyScope
from wardgate.identity.records import ClientInfo
from wardgate.security.tokens import Claims
from wardgate.sessions.registry import UserState

TOKEN_COOKIE = "token"  # noqa: S105 - the cookie name
KEYS_NOT_HERE = "API keys cannot be used for wardgate's own account and admin API; sign in instead."
_NOT_AUTHENTICATED = "Not authenticated."
Via = Literal["header", "cookie", "api-key-header"]


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: the live user, the verified claims, and how the token travelled."""

    user: UserState
    claims: Claims
    token: str
    via: Literal["header", "cookie"]

    def may_reach(self, upstream: str, path: str) -> bool:
        """Sessions are not scoped (the upstream's role and group rules still apply)."""
        return True


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """A program holding an API key: the key's owner, the key's facts and how the key travelled."""

    user: UserState
    key: ApiKeyState
    via: Literal["header", "api-key-header"]
    endpoints: KeyScope  # API_KEYS_ALLOWED_ENDPOINTS

    def may_reach(self, upstream: str, path: str) -> bool:
        """The key's own scope and the site-wide endpoint list must both allow `path` on `upstream`."""
        return self.key.scope.allows(upstream, path) and self.endpoints.allows(upstream, path)


Caller = Principal | KeyPrincipal


def gateway(conn: HTTPConnection) -> Gateway:
    """The process's services."""
    found: Gateway = conn.app.state.gateway
    return found


def client_info(conn: HTTPConnection) -> ClientInfo:
    """Client IP (already resolved by the trusted-proxy middleware) and user agent."""
    host = conn.client.host if conn.client else None
    return ClientInfo(ip=host, user_agent=conn.headers.get("user-agent"))


def read_credential(conn: HTTPConnection) -> tuple[str, Via] | None:
    """`Authorization: Bearer`, then the API-key header, then the `token` cookie.

    A header that is present decides, even when its value is unusable (401): the CSRF check exempts
    any request carrying it, so the cookie must not be used instead.
    """
    authorization = conn.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Unsupported authorization header; use 'Bearer <token>'.")
        return value.strip(), "header"
    api_key = conn.headers.get(gateway(conn).settings.custom_api_key_header)
    if api_key:
        return api_key.strip(), "api-key-header"
    cookie = session_cookie(conn)
    return (cookie, "cookie") if cookie else None


def session_cookie(conn: HTTPConnection) -> str | None:
    """The `token` cookie, or None. Two different ones are refused (401), not resolved.

    A browser sends two when a second was set beside wardgate's with another Domain or Path (cookie
    tossing from a sibling subdomain, RFC 6265bis §8.6): taking either could sign the user in to an
    account the attacker chose.
    """
    header = conn.headers.get("cookie")
    if not header or TOKEN_COOKIE not in header:
        return None
    # Split as Starlette's cookie_parser splits (on ";", names trimmed), so the count matches its view.
    values = {
        value.strip()
        for name, _, value in (pair.partition("=") for pair in header.split(";"))
        if name.strip() == TOKEN_COOKIE
    }
    if len(values) > 1:
        raise AuthenticationError(
            "Two different session cookies were sent (one may come from another site on this domain); "
            "clear this site's cookies and sign in again."
        )
    return conn.cookies.get(TOKEN_COOKIE)


def is_wardgate_credential(gw: Gateway, authorization: str) -> bool:
    """Whether an `Authorization` value is wardgate's own (a session token or API key): never forwarded."""
    value = authorization.partition(" ")[2].strip()
    try:
        if value.startswith(KEY_PREFIX):
            gw.api_keys.identify(value)
        else:
            gw.codec.verify(value)
    except ApiError:
        return False
    return True


async def _caller(conn: HTTPConnection, *, keys_allowed: bool, prefer_cookie: bool = False) -> Caller:
    cookie = session_cookie(conn) if prefer_cookie else None
    credential: tuple[str, Via] | None = (cookie, "cookie") if cookie else read_credential(conn)
    if credential is None:
        raise AuthenticationError(_NOT_AUTHENTICATED)
    value, via = credential
    gw = gateway(conn)
    peer = conn.scope.get("client")
    ip = peer[0] if peer else None  # as client_info(): already resolved by the trusted-proxy middleware
    caller: Caller
    try:
        if via == "api-key-header" or (via == "header" and value.startswith(KEY_PREFIX)):
            key_via: Literal["header", "api-key-header"] = "header" if via == "header" else "api-key-header"
            caller = await _key_caller(gw, value, key_via, keys_allowed=keys_allowed)
        else:
            caller = await _session_caller(gw, value, "cookie" if via == "cookie" else "header", ip)
    except AuthenticationError:
        # Only failures touch the limiter (it may be Redis): valid requests stay I/O-free.
        await anyio.to_thread.run_sync(gw.limiter.hit, gw.auth_failures, f"auth-failure:{ip}")
        raise
    conn.state.principal = caller
    return caller


async def _session_caller(
    gw: Gateway, token: str, via: Literal["header", "cookie"], ip: str | None
) -> Principal:
    claims = gw.codec.verify(token)
    user = None if gw.registry.is_stale else gw.registry.check(claims)
    if user is None:  # the view is stale, or older than this token: the database decides
        user = await anyio.to_thread.run_sync(gw.registry.check_in_database, claims)
    gw.registry.touch(claims.session_id, claims.user_id, ip)
    return Principal(user=user, claims=claims, token=token, via=via)


async def _key_caller(
    gw: Gateway, key: str, via: Literal["header", "api-key-header"], *, keys_allowed: bool
) -> KeyPrincipal:
    """The one check of an API key, whichever header carried it."""
    service = gw.api_keys
    admitted: Admitted
    try:
        if gw.registry.is_stale:
            admitted = await anyio.to_thread.run_sync(partial(service.identify, key, stale=True))
        else:
            admitted = service.identify(key)
    except AuthenticationError as exc:
        await anyio.to_thread.run_sync(service.record_refusal, exc.code)
        raise
    try:
        if not keys_allowed:
            raise PermissionDeniedError(KEYS_NOT_HERE, code="api_key_not_allowed_here")
        service.authorize(admitted)
    except ApiError as exc:
        await anyio.to_thread.run_sync(service.record_refusal, exc.code, admitted.key)
        raise
    return KeyPrincipal(admitted.user, admitted.key, via, service.policy.endpoints)


async def authenticate(conn: HTTPConnection) -> Principal:
    """A person's session, checked against the revocation view (or the database if stale).

    API keys are refused here (403): this is the dependency of wardgate's own routes.
    """
    caller = await _caller(conn, keys_allowed=False)
    if not isinstance(caller, Principal):  # unreachable: keys are refused above
        raise PermissionDeniedError(KEYS_NOT_HERE, code="api_key_not_allowed_here")
    return caller


async def authenticate_caller(conn: HTTPConnection, *, prefer_cookie: bool = False) -> Caller:
    """A session or an API key, for routes that forward to upstreams.

    The route must then check `caller.may_reach(upstream, path)` (and the upstream's role rules).
    `prefer_cookie` is for the app upstream: a browser there carries wardgate's cookie *and* the app's
    own `Authorization` header (Open WebUI's JWT), which belongs to the app and is passed through.
    That request is CSRF-exempt because of the header, which is sound: a cross-site page cannot
    attach `Authorization` without a CORS preflight that wardgate refuses for unlisted origins.
    """
    return await _caller(conn, keys_allowed=True, prefer_cookie=prefer_cookie)


def still_valid(gw: Gateway, caller: Caller) -> bool:
    """Whether a caller admitted earlier may still be served (for long-lived WebSockets)."""
    try:
        if isinstance(caller, KeyPrincipal):
            gw.api_keys.recheck(caller.key)
        elif gw.registry.check(caller.claims) is None:
            return False  # the view cannot vouch for it any more (fail closed); the client reconnects
    except ApiError:
        return False
    return True


async def require_verified(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A user or admin; pending accounts reach nothing but their own session."""
    if principal.user.role not in ("user", "admin"):
        raise PermissionDeniedError(
            "Your account is pending approval by an administrator.", code="pending_approval"
        )
    return principal


async def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin."""
    if principal.user.role != "admin":
        raise PermissionDeniedError("Administrator access is required.", code="admin_required")
    return principal


CurrentUser = Annotated[Principal, Depends(authenticate)]
VerifiedUser = Annotated[Principal, Depends(require_verified)]
AdminUser = Annotated[Principal, Depends(require_admin)]
CallerDep = Annotated[Caller, Depends(authenticate_caller)]


async def _gateway_dependency(conn: HTTPConnection) -> Gateway:
    return gateway(conn)


async def _client_dependency(conn: HTTPConnection) -> ClientInfo:
    return client_info(conn)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in its thread pool, a hop per
# request that cost /health half its throughput (bench/auth_overhead.py).
GatewayDep = Annotated[Gateway, Depends(_gateway_dependency)]
ClientDep = Annotated[ClientInfo, Depends(_client_dependency)]
