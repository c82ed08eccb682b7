"""The `token` cookie: HttpOnly always, SameSite and Secure from configuration."""

from __future__ import annotations

from fastapi import Request, Response

from wardgate.config.settings import Settings
from wardgate.http.deps import TOKEN_COOKIE
from wardgate.security.tokens import IssuedToken


def set_token_cookie(response: Response, request: Request, settings: Settings, token: IssuedToken) -> None:
    """Set the session cookie; Secure follows the setting, or the request's scheme when unset."""
    secure = settings.auth_cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    max_age = None if token.expires_at is None else token.expires_at - token.issued_at
    response.set_cookie(
        TOKEN_COOKIE,
        token.token,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=secure,
        samesite=settings.auth_cookie_same_site,
    )


def clear_token_cookie(response: Response, request: Request, settings: Settings) -> None:
    """Delete the session cookie (with the same attributes, so browsers match it)."""
    secure = settings.auth_cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    response.delete_cookie(
        TOKEN_COOKIE, path="/", httponly=True, secure=secure, samesite=settings.auth_cookie_same_site
    )
