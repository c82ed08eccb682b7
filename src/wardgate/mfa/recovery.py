"""Recovery codes: ten single-use codes, shown once, stored as keyed digests.

Each code is ten characters from 31 letters and digits without look-alikes (49 bits), written as two
groups of five. With 49 bits, guessing is bounded by the code-attempt limit, so a keyed hash
(HMAC-SHA256 under a key derived for this purpose alone) is enough — no password hash is needed,
and lookup is one indexed equality, the same whichever code is typed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from wardgate.security.keys import RECOVERY_CODE_DIGEST, derive_key

COUNT = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # 31 symbols: no i, l, o, 0 or 1
_LENGTH = 10


def new_codes() -> list[str]:
    """`COUNT` fresh codes, formatted `xxxxx-xxxxx`."""
    codes = []
    for _ in range(COUNT):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def normalise(code: str) -> str | None:
    """The code as stored (lower case, no separators), or None when it cannot be one."""
    text = code.strip().lower().replace("-", "").replace(" ", "")
    if len(text) != _LENGTH or any(c not in _ALPHABET for c in text):
        return None
    return text


class RecoveryCodeHasher:
    """HMAC-SHA256 digests of recovery codes under a key derived from the site's secret."""

    def __init__(self, secret: str) -> None:
        self._key = derive_key(secret, RECOVERY_CODE_DIGEST)

    def digest(self, code: str) -> str | None:
        """The hex digest of a code as typed, or None when the text cannot be a code."""
        text = normalise(code)
        if text is None:
            return None
        return hmac.new(self._key, text.encode("ascii"), hashlib.sha256).hexdigest()
