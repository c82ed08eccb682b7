"""TOTP (RFC 6238) with pyotp: six digits, 30-second steps, one step of clock skew either way.

A code is accepted once: verification returns the time step it matched, and the caller keeps the
last accepted step per account (in the shared database), refusing that step and every earlier one —
RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the OTP after the successful
validation has been issued for the first OTP".
"""

from __future__ import annotations

import hmac
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyotp

STEP_SECONDS = 30
DIGITS = 6
SKEW_STEPS = 1  # RFC 6238 §5.2 recommends at most one step of network delay
_CODE = re.compile(r"[0-9]{6}")  # ASCII digits only: "\\d" also matches other scripts' digits


def new_secret() -> str:
    """A fresh base32 secret of 160 bits (RFC 4226 §4 recommends 160)."""
    import pyotp

    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The `otpauth://totp/...` address an authenticator app reads from the QR code."""
    return _totp(secret).provisioning_uri(name=account, issuer_name=issuer)


def _totp(secret: str) -> pyotp.TOTP:
    import pyotp  # here and above, not at the top: a site without second factors never loads it

    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)


def is_code(text: str) -> bool:
    """Whether `text` has the form of a TOTP code (six digits) rather than a recovery code."""
    return _CODE.fullmatch(text) is not None


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step within the skew whose code equals `code`, or None.

    Every candidate is compared (constant time each), newest first, so that the latest step wins.
    """
    if not is_code(code):
        return None
    totp = _totp(secret)
    current = int(now) // STEP_SECONDS
    found = None
    for step in range(current + SKEW_STEPS, current - SKEW_STEPS - 1, -1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code) and found is None:
            found = step
    return found


def qr_svg(uri: str) -> str:
    """The provisioning address as an inline SVG QR code (no script, no style: CSP-safe)."""
    import segno

    svg: str = segno.make(uri, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff")
    return svg
