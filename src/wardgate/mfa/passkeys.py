"""Passkeys (WebAuthn Level 3): the relying party, its ceremonies and what they carry.

The checks themselves are py_webauthn's, in `ceremonies`, loaded at the first ceremony (py_webauthn,
cbor2, pyOpenSSL and pyasn1 are 4 MB and 90 ms of imports that a site without passkeys never uses).

The relying party ID and origin come from `WEBUI_URL` (never from a request's Host): a browser signs
for the origin it shows, and the server accepts exactly the configured one (WebAuthn §7.1 step 9).
Every credential is discoverable (a passkey: sign-in without typing an email) and every ceremony
requires user verification (a PIN or biometric on the device), so a passkey alone is two factors.

A ceremony's challenge is sealed (Fernet: encrypted and authenticated, ten minutes at most) into a
token the client hands back, so beginning one writes nothing; finishing it consumes its id in the
database shared by every instance, so an assertion is accepted once (`wardgate.mfa.service`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import InvalidToken

from wardgate.errors import BadRequestError
from wardgate.security.keys import PASSKEY_CEREMONY, FernetRing, SecretRing, as_ring

CEREMONY_LIFETIME = 300  # seconds between the options and the browser's answer
TIMEOUT_MS = 120_000  # the browser's own limit on the prompt
Purpose = Literal["register", "signin", "second-factor", "step-up"]
CEREMONY_INVALID = "This passkey request has expired or is not valid. Please try again."
PASSKEY_REFUSED = "The passkey could not be verified."
# WebAuthn's AuthenticatorTransport values (§5.8.4); anything else a client sends is dropped.
TRANSPORTS = frozenset({"ble", "cable", "hybrid", "internal", "nfc", "smart-card", "usb"})


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the passkeys are for: the RP ID (a host name), its display name and the exact origin."""

    id: str
    name: str
    origin: str

    @classmethod
    def from_url(cls, url: str | None, name: str) -> RelyingParty | None:
        """From `WEBUI_URL`; None when it is unset or names an IP address (never a valid RP ID)."""
        if not url:
            return None
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return cls(id=host, name=name, origin=f"{parts.scheme}://{parts.netloc}".lower())
        return None


@dataclass(frozen=True, slots=True)
class Ceremony:
    """A begun ceremony, as sealed into its token: what it is for, for whom, and its challenge."""

    id: str  # single-use id
    purpose: Purpose
    challenge: str  # base64url
    issued_at: int
    user_id: str | None = None  # register, step-up, second-factor
    session_id: str | None = None  # register, step-up: the session that asked
    pending: str | None = None  # second-factor: the pending sign-in's id


@dataclass(frozen=True, slots=True)
class NewPasskey:
    """A verified registration, ready to store."""

    credential_id: str  # base64url
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]


class CeremonySealer:
    """Seal and open ceremony tokens under a key derived for this purpose alone, from each secret of
    the ring: sealed with the current one, opened with any (a ceremony begun on an instance that
    signs with another secret of the ring, during a rolling rotation)."""

    def __init__(self, secrets: SecretRing | str, *, lifetime: int = CEREMONY_LIFETIME) -> None:
        self._fernet = FernetRing(as_ring(secrets).fernet_keys(PASSKEY_CEREMONY))
        self._lifetime = lifetime

    def seal(self, ceremony: Ceremony) -> str:
        """The token for the client."""
        return self._fernet.encrypt(json.dumps(asdict(ceremony)).encode()).decode("ascii")

    def open(self, token: str, purpose: Purpose) -> Ceremony:
        """The ceremony behind `token` when it is authentic, recent and for `purpose`; else 400."""
        try:
            data = json.loads(self._fernet.decrypt(token.encode("ascii"), ttl=self._lifetime))
            ceremony = Ceremony(**data)
        except (InvalidToken, UnicodeEncodeError, ValueError, TypeError):
            raise BadRequestError(CEREMONY_INVALID, code="passkey_ceremony_invalid") from None
        if ceremony.purpose != purpose:
            raise BadRequestError(CEREMONY_INVALID, code="passkey_ceremony_invalid")
        return ceremony


def begin(purpose: Purpose, **who: str | None) -> tuple[Ceremony, bytes]:
    """A new ceremony and its raw challenge (32 random bytes)."""
    raw = secrets.token_bytes(32)
    ceremony = Ceremony(
        id=secrets.token_urlsafe(24),
        purpose=purpose,
        challenge=bytes_to_base64url(raw),
        issued_at=int(time.time()),
        **who,
    )
    return ceremony, raw


def credential_id_of(credential: dict[str, Any]) -> str:
    """The credential's id (`rawId`), normalised base64url; 400 when it has none."""
    raw = credential.get("rawId", credential.get("id"))
    if not isinstance(raw, str) or not 0 < len(raw) <= 1400:
        raise BadRequestError(PASSKEY_REFUSED, code="passkey_invalid")
    try:
        return bytes_to_base64url(base64url_to_bytes(raw))
    except ValueError:
        raise BadRequestError(PASSKEY_REFUSED, code="passkey_invalid") from None


def user_handle_of(credential: dict[str, Any]) -> bytes | None:
    """The user handle an assertion carries (discoverable credentials return it), if any."""
    response = credential.get("response")
    handle = response.get("userHandle") if isinstance(response, dict) else None
    if not isinstance(handle, str) or not handle:
        return None
    try:
        return base64url_to_bytes(handle)
    except ValueError:
        return None


def counter_went_back(stored: int, new: int) -> bool:
    """WebAuthn §6.1.1: a counter that does not grow (unless both are zero, as synced passkeys send)
    signals a cloned authenticator."""
    return (stored > 0 or new > 0) and new <= stored


def bytes_to_base64url(raw: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as WebAuthn encodes binary values in JSON."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def base64url_to_bytes(text: str) -> bytes:
    """The bytes of base64url text, padded or not; ValueError when it is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64url") from None
