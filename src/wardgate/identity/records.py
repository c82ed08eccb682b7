"""Account value types and input rules: roles, email and name checks, the password policy,
the brute-force limits, and the small records the account service takes and returns."""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from wardgate.errors import BadRequestError
from wardgate.security.passwords import check_length
from wardgate.security.ratelimit import Limit, parse_rate
from wardgate.security.tokens import IssuedToken
from wardgate.sessions.registry import UserState

ROLES = ("pending", "user", "admin")
INVALID_CREDENTIALS = (
    "The email or password provided is incorrect. Please check for typos and try signing in again."
)
ACCOUNT_DISABLED = "This account is disabled. Contact an administrator."
_NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """The rules a new password must satisfy."""

    min_length: int = 8
    pattern: re.Pattern[str] | None = None
    hint: str = ""

    def check(self, password: str) -> None:
        """Raise BadRequestError with a helpful message when the password is refused."""
        check_length(password)
        if len(password) < self.min_length:
            raise BadRequestError(
                f"Password must be at least {self.min_length} characters long.", code="password_too_short"
            )
        if self.pattern is not None and not self.pattern.match(password):
            raise BadRequestError(
                self.hint or "Password does not meet the password policy of this site.",
                code="password_policy",
            )


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """The brute-force limits: per (account, IP), per IP across accounts, sign-up, password change."""

    signin: Limit
    signin_ip: Limit
    signup: Limit
    password_change: Limit

    @classmethod
    def parse(cls, signin: str, signin_ip: str, signup: str, password_change: str) -> AuthLimits:
        """Build from rate strings such as `5/3m`."""
        return cls(
            Limit("signin", parse_rate(signin)),
            Limit("signin-ip", parse_rate(signin_ip)),
            Limit("signup", parse_rate(signup)),
            Limit("password-change", parse_rate(password_change)),
        )


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the user and the signed token."""

    user: UserState
    token: IssuedToken


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a request came from, as far as the trusted-proxy layer could tell."""

    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class UserChanges:
    """An admin's edit of a user; None leaves a field as it is."""

    role: str | None = None
    name: str | None = None
    email: str | None = None
    password: str | None = None
    active: bool | None = None


def normalise_email(email: str) -> str:
    """Trim, validate and lower-case an email address, or raise BadRequestError."""
    candidate = email.strip()
    try:
        validated = validate_email(
            candidate, check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except EmailNotValidError:
        raise BadRequestError(
            "Invalid email format. Please enter a valid email address.", code="invalid_email"
        ) from None
    return validated.normalized.lower()


def clean_name(name: str) -> str:
    """Trim a display name and refuse empty or control-character names."""
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > _NAME_MAX or any(ord(c) < 32 for c in cleaned):
        raise BadRequestError(f"Name must be 1 to {_NAME_MAX} printable characters.", code="invalid_name")
    return cleaned
