"""Dependencies: from a request to a `Principal` — the hot path, pure CPU unless the view is stale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import Depends, Request

from wardgate.accounts import ClientInfo
from wardgate.errors import AuthenticationError, PermissionDeniedError
from wardgate.gateway import Gateway
from wardgate.sessions import UserState
from wardgate.tokens import Claims

TOKEN_COOKIE = "token"  # noqa: S105 - the cookie name
_NOT_AUTHENTICATED = "Not authenticated."


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the live user, the verified claims, and how the credential travelled."""

    user: UserState
    claims: Claims
    token: str
    via: Literal["header", "cookie"]

    def may_reach(self, upstream: str, path: str) -> bool:
        """Whether this credential may be used for `path` on `upstream` (API keys can be scoped)."""
        return True


def gateway(request: Request) -> Gateway:
    """The process's services."""
    found: Gateway = request.app.state.gateway
    return found


def client_info(request: Request) -> ClientInfo:
    """Client IP (already resolved by the trusted-proxy middleware) and user agent."""
    host = request.client.host if request.client else None
    return ClientInfo(ip=host, user_agent=request.headers.get("user-agent"))


def read_credential(request: Request) -> tuple[str, Literal["header", "cookie"]] | None:
    """`Authorization: Bearer`, then the `token` cookie (Open WebUI's order)."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationError("Unsupported authorization header; use 'Bearer <token>'.")
        return value.strip(), "header"
    cookie = request.cookies.get(TOKEN_COOKIE)
    return (cookie, "cookie") if cookie else None


async def authenticate(request: Request) -> Principal:
    """Verify the credential and check it against the revocation view (or the database if stale)."""
    credential = read_credential(request)
    if credential is None:
        raise AuthenticationError(_NOT_AUTHENTICATED)
    token, via = credential
    gw = gateway(request)
    ip = client_info(request).ip
    try:
        claims = gw.codec.verify(token)
        if gw.registry.is_stale:
            user = await anyio.to_thread.run_sync(gw.registry.check_in_database, claims)
        else:
            user = gw.registry.check(claims)
    except AuthenticationError:
        # Only failures touch the limiter (it may be Redis): valid requests stay I/O-free.
        await anyio.to_thread.run_sync(gw.limiter.hit, gw.auth_failures, f"auth-failure:{ip}")
        raise
    gw.registry.touch(claims.session_id, claims.user_id, ip)
    principal = Principal(user=user, claims=claims, token=token, via=via)
    request.state.principal = principal
    return principal


def require_verified(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """A user or admin; pending accounts reach nothing but their own session."""
    if principal.user.role not in ("user", "admin"):
        raise PermissionDeniedError(
            "Your account is pending approval by an administrator.", code="pending_approval"
        )
    return principal


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin."""
    if principal.user.role != "admin":
        raise PermissionDeniedError("Administrator access is required.", code="admin_required")
    return principal


CurrentUser = Annotated[Principal, Depends(authenticate)]
VerifiedUser = Annotated[Principal, Depends(require_verified)]
AdminUser = Annotated[Principal, Depends(require_admin)]
GatewayDep = Annotated[Gateway, Depends(gateway)]
ClientDep = Annotated[ClientInfo, Depends(client_info)]
