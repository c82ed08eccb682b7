"""The rules a person's input must follow: email addresses, display names and new passwords."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


_MAX_ADDRESS = 254  # RFC 5321 §4.5.3.1.3: a path of 256 octets, less the brackets


def exact_address(value: Any) -> str | None:
    """The one form in which an address is matched across systems (allowed domains, merging onto an
    account, the person a service key names): trimmed and lower-cased, printable ASCII only, one `@`
    between a local part and a domain; None for anything else.

    Nothing is folded. `str.lower()` turns U+212A KELVIN SIGN into `k`, and IDNA (UTS #46, as an
    address validator applies it) maps full-width letters (U+FF41 on) to ASCII, so a Kelvin-sign
    `Karl@...` or a full-width domain would otherwise match `karl@example.com`. An
    internationalised address (RFC 6531) is refused for matching rather than guessed at.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) > _MAX_ADDRESS or not all("!" <= c <= "~" for c in text) or text.count("@") != 1:
        return None
    local, _, domain = text.partition("@")
    if not local or not domain:
        return None
    return text.lower()  # ASCII only here, so lower() changes A-Z and nothing else
