"""The rules a person's input must follow: email addresses, display names and new passwords."""

from __future__ import annotations

import re
from dataclasses import dataclass

from wardgate.config.values import email_address
from wardgate.errors import BadRequestError
from wardgate.security.passwords import check_length

NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class PasswordPolicy:
    """The rules a new password must satisfy (`PASSWORD_MIN_LENGTH`, the optional policy regex)."""

    min_length: int
    pattern: re.Pattern[str] | None
    hint: str

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


def normalise_email(email: str) -> str:
    """Trim, validate and lower-case an email address, or raise BadRequestError."""
    try:
        return email_address(email)
    except ValueError:
        raise BadRequestError(
            "Invalid email format. Please enter a valid email address.", code="invalid_email"
        ) from None


def clean_name(name: str) -> str:
    """Trim a display name and refuse empty or control-character names."""
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > NAME_MAX or any(ord(c) < 32 for c in cleaned):
        raise BadRequestError(f"Name must be 1 to {NAME_MAX} printable characters.", code="invalid_name")
    return cleaned
