"""Recovery codes: ten single-use codes, shown once, stored as keyed digests.

Each code is ten characters from 31 letters and digits without look-alikes (49 bits), written as two
groups of five. With 49 bits, guessing is bounded by the code-attempt limit, so a keyed hash
(HMAC-SHA256 under a key derived for this purpose alone) is enough — no password hash is needed,
and lookup is one indexed equality, the same whichever code is typed.

After a rotation of `WEBUI_SECRET_KEY`, a code is looked up under the digest of each secret of the
ring (`IN`): codes are single use, so none is ever re-digested; those made under a fallback end with
it (`wardgate check --keys` counts them, and their owners make new ones).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from wardgate.security.keys import RECOVERY_CODE_DIGEST, SecretRing, as_ring

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
    """HMAC-SHA256 digests of recovery codes under a key derived from each secret of the site's ring."""

    def __init__(self, secrets: SecretRing | str) -> None:
        ring = as_ring(secrets)
        self.current_id = ring.current_id
        self._keys = [key for _kid, key in ring.derived(RECOVERY_CODE_DIGEST)]

    def digest(self, code: str) -> str | None:
        """The hex digest of a code as typed (under the current secret), or None when the text cannot
        be a code."""
        found = self.digests(code)
        return found[0] if found else None

    def digests(self, code: str) -> list[str]:
        """The code's digest under each secret, the current one first; empty when it cannot be a code."""
        text = normalise(code)
        if text is None:
            return []
        return [hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest() for key in self._keys]
