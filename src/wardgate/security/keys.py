"""The site's secrets and the keys derived from them: one derivation, a separate key for each purpose.

`WEBUI_SECRET_KEY` signs session tokens; everything else that needs a key derives its own with
HKDF-SHA256 (RFC 5869) under an `info` label used for nothing else, so that no two purposes ever
share key material and a key for one cannot be turned into a key for another.

Rotation (`WEBUI_SECRET_KEY_FALLBACKS`): a `SecretRing` holds the current secret first, then the
earlier ones still accepted. Each has a public name, its key id (`kid`): 8 bytes derived under their
own label, so naming a key in a token header or in `wardgate check` reveals nothing a token's own
HS256 signature does not already offer an attacker to test guesses against. Data at rest follows
itsdangerous and MultiFernet: the newest key writes, every key reads (`FernetRing`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wardgate.config.settings import Settings

API_KEY_DIGEST = b"wardgate/api-key-digest/v1"
OAUTH_TOKENS = b"wardgate/oauth-session-token-encryption/v1"
OAUTH_LOGIN_STATE = b"wardgate/oauth-login-state/v1"
MFA_SECRETS = b"wardgate/mfa-secret-encryption/v1"
RECOVERY_CODE_DIGEST = b"wardgate/mfa-recovery-code-digest/v1"
PASSKEY_CEREMONY = b"wardgate/passkey-ceremony/v1"
KEY_ID = b"wardgate/key-id/v1"


def derive_key(secret: str, info: bytes) -> bytes:
    """32 bytes for the purpose named by `info`, derived from `secret`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode("utf-8"))


def fernet_key(secret: str, info: bytes) -> bytes:
    """A Fernet key (url-safe base64 of 32 derived bytes) for the purpose named by `info`."""
    return base64.urlsafe_b64encode(derive_key(secret, info))


def key_id(secret: str) -> str:
    """The public name of `secret`: 16 hex digits derived from it (the token header's `kid`)."""
    return derive_key(secret, KEY_ID)[:8].hex()


@dataclass(frozen=True, slots=True, repr=False)
class SecretRing:
    """The current secret and the earlier ones still accepted, newest first; never shown by repr."""

    secrets: tuple[str, ...]
    ids: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.secrets or any(not s for s in self.secrets):
            raise ValueError("a secret ring needs at least one non-empty secret")
        ids = tuple(key_id(s) for s in self.secrets)
        if len(set(ids)) != len(ids):
            raise ValueError("a secret ring lists the same secret twice")
        object.__setattr__(self, "ids", ids)

    @classmethod
    def of(cls, current: str, fallbacks: Sequence[str] = ()) -> SecretRing:
        """The ring that signs with `current` and also accepts `fallbacks`."""
        return cls((current, *fallbacks))

    def __repr__(self) -> str:
        return f"SecretRing(ids={self.ids!r})"

    @property
    def current_id(self) -> str:
        """The key id of the secret that signs and writes."""
        return self.ids[0]

    def derived(self, info: bytes) -> tuple[tuple[str, bytes], ...]:
        """(key id, derived key) for `info`, one per secret, the current one first."""
        return tuple((kid, derive_key(s, info)) for kid, s in zip(self.ids, self.secrets, strict=True))

    def fernet_keys(self, info: bytes) -> tuple[bytes, ...]:
        """A Fernet key for `info` per secret, the current one first."""
        return tuple(fernet_key(s, info) for s in self.secrets)


def secret_ring(settings: Settings) -> SecretRing:
    """`WEBUI_SECRET_KEY` and `WEBUI_SECRET_KEY_FALLBACKS`, as a ring."""
    fallbacks = [k.get_secret_value() for k in settings.webui_secret_key_fallbacks]
    return SecretRing.of(settings.secret_key, fallbacks)


def as_ring(secrets: SecretRing | str) -> SecretRing:
    """A ring as given, or a ring of one secret."""
    return secrets if isinstance(secrets, SecretRing) else SecretRing.of(secrets)


class FernetRing:
    """MultiFernet that also says whether a token needs re-encrypting (an older key opened it)."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        """`keys`: Fernet keys, newest first (the first encrypts, every one decrypts)."""
        if not keys:
            raise ValueError("at least one Fernet key is required")
        self._newest = Fernet(keys[0])
        self._every = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, data: bytes) -> bytes:
        """`data` sealed under the newest key."""
        return self._newest.encrypt(data)

    def decrypt(self, token: bytes, ttl: int | None = None) -> bytes:
        """The plaintext under any key (InvalidToken when none opens it or it is older than `ttl`)."""
        return self._every.decrypt(token, ttl=ttl)

    def open(self, token: bytes) -> tuple[bytes, bytes | None]:
        """The plaintext, and the token re-encrypted under the newest key when an older key opened it
        (None when the newest did: nothing to write). InvalidToken when no key opens it."""
        try:
            return self._newest.decrypt(token), None  # the common case: one HMAC check
        except InvalidToken:
            plain = self._every.decrypt(token)
        return plain, self._newest.encrypt(plain)
