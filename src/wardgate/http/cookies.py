"""The `token` cookie: HttpOnly always, `Path=/`, SameSite and Secure from the site's cookie policy."""

from __future__ import annotations

from fastapi import Request, Response

from wardgate.http.deps import site
from wardgate.identity.authentication import TOKEN_COOKIE
from wardgate.security.tokens import IssuedToken


def set_token_cookie(response: Response, request: Request, token: IssuedToken) -> None:
    """Set the session cookie; Secure follows the setting, or the request's scheme when unset.

    With SESSION_COOKIE_DOMAIN the cookie is the parent domain's, and a host-only one left from
    before is deleted: two `token` cookies are refused (`deps.session_cookie`)."""
    policy = site(request).cookie
    max_age = None if token.expires_at is None else token.expires_at - token.issued_at
    if policy.domain:
        _delete(response, request, domain=None)
    response.set_cookie(
        TOKEN_COOKIE,
        token.token,
        max_age=max_age,
        path="/",
        domain=policy.domain,
        httponly=True,
        secure=policy.is_secure(request.url.scheme),
        samesite=policy.same_site,
    )


def clear_token_cookie(response: Response, request: Request) -> None:
    """Delete the session cookie (with the same attributes, so browsers match it), and with
    SESSION_COOKIE_DOMAIN the host-only one too."""
    domain = site(request).cookie.domain
    _delete(response, request, domain=domain)
    if domain:
        _delete(response, request, domain=None)


def _delete(response: Response, request: Request, *, domain: str | None) -> None:
    policy = site(request).cookie
    response.delete_cookie(
        TOKEN_COOKIE,
        path="/",
        domain=domain,
        httponly=True,
        secure=policy.is_secure(request.url.scheme),
        samesite=policy.same_site,
    )


MFA_COOKIE = "wardgate_mfa"
"""After a single sign-on that still needs the account's own second factor: the pending sign-in's
token, for the sign-in page's code step (HttpOnly, five minutes, only under /auth)."""


def set_mfa_cookie(response: Response, request: Request, mfa_token: str) -> None:
    """Hand the pending sign-in to the sign-in page without putting its token in an address."""
    policy = site(request).cookie
    response.set_cookie(
        MFA_COOKIE,
        mfa_token,
        max_age=300,
        path=site(request).at("/auth"),
        httponly=True,
        secure=policy.is_secure(request.url.scheme),
        samesite="lax",  # it arrives with the provider's redirect back, a top-level navigation
    )


def clear_mfa_cookie(response: Response, request: Request) -> None:
    """Delete the pending sign-in's cookie (with the same attributes)."""
    response.delete_cookie(
        MFA_COOKIE,
        path=site(request).at("/auth"),
        httponly=True,
        secure=site(request).cookie.is_secure(request.url.scheme),
        samesite="lax",
    )
