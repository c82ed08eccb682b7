"""The `token` cookie: HttpOnly always, `Path=/`, SameSite and Secure from the site's cookie policy."""

from __future__ import annotations

from fastapi import Request, Response

from wardgate.http.deps import site
from wardgate.identity.authentication import TOKEN_COOKIE
from wardgate.security.tokens import IssuedToken


def set_token_cookie(response: Response, request: Request, token: IssuedToken) -> None:
    """Set the session cookie; Secure follows the setting, or the request's scheme when unset."""
    policy = site(request).cookie
    max_age = None if token.expires_at is None else token.expires_at - token.issued_at
    response.set_cookie(
        TOKEN_COOKIE,
        token.token,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=policy.is_secure(request.url.scheme),
        samesite=policy.same_site,
    )


def clear_token_cookie(response: Response, request: Request) -> None:
    """Delete the session cookie (with the same attributes, so browsers match it)."""
    policy = site(request).cookie
    response.delete_cookie(
        TOKEN_COOKIE,
        path="/",
        httponly=True,
        secure=policy.is_secure(request.url.scheme),
        samesite=policy.same_site,
    )
