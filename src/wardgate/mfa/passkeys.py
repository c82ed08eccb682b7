"""Passkeys (WebAuthn Level 3) with py_webauthn: the relying party, its ceremonies and their checks.

The relying party ID and origin come from `WEBUI_URL` (never from a request's Host): a browser signs
for the origin it shows, and the server accepts exactly the configured one (WebAuthn §7.1 step 9).
Every credential is discoverable (a passkey: sign-in without typing an email) and every ceremony
requires user verification (a PIN or biometric on the device), so a passkey alone is two factors.

A ceremony's challenge is sealed (Fernet: encrypted and authenticated, ten minutes at most) into a
token the client hands back, so beginning one writes nothing; finishing it consumes its id in the
database shared by every instance, so an assertion is accepted once (`wardgate.mfa.service`).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography.fernet import InvalidToken
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from wardgate.errors import BadRequestError
from wardgate.security.keys import PASSKEY_CEREMONY, FernetRing, SecretRing, as_ring

CEREMONY_LIFETIME = 300  # seconds between the options and the browser's answer
TIMEOUT_MS = 120_000  # the browser's own limit on the prompt
Purpose = Literal["register", "signin", "second-factor", "step-up"]
CEREMONY_INVALID = "This passkey request has expired or is not valid. Please try again."
PASSKEY_REFUSED = "The passkey could not be verified."
_TRANSPORTS = {t.value for t in AuthenticatorTransport}


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


def _descriptors(credentials: list[tuple[str, tuple[str, ...]]]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(cid),
            transports=[AuthenticatorTransport(t) for t in transports if t in _TRANSPORTS],
        )
        for cid, transports in credentials
    ]


def registration_options(
    rp: RelyingParty,
    challenge: bytes,
    *,
    user_handle: bytes,
    email: str,
    name: str,
    existing: list[tuple[str, tuple[str, ...]]],
) -> dict[str, Any]:
    """Options for `navigator.credentials.create()`, as JSON values (the account's passkeys excluded)."""
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_handle,
        user_name=email,
        user_display_name=name or email,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=_descriptors(existing),
    )
    found: dict[str, Any] = json.loads(options_to_json(options))
    return found


def authentication_options(
    rp: RelyingParty, challenge: bytes, allowed: list[tuple[str, tuple[str, ...]]]
) -> dict[str, Any]:
    """Options for `navigator.credentials.get()`; no allowed credentials means "any passkey of this
    site" (the discoverable, email-free sign-in)."""
    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allowed),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    found: dict[str, Any] = json.loads(options_to_json(options))
    return found


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


def verify_registration(rp: RelyingParty, credential: dict[str, Any], challenge: str) -> NewPasskey:
    """Check a `create()` answer against the ceremony; 400 when anything does not hold."""
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        # py_webauthn raises its own errors for a failed check, and builtin ones for some malformed
        # input; either way the passkey is refused, and the reason stays out of the answer.
        raise BadRequestError(PASSKEY_REFUSED, code="passkey_invalid") from None
    response = credential.get("response")
    transports = response.get("transports") if isinstance(response, dict) else None
    if not isinstance(transports, list):
        transports = None
    return NewPasskey(
        credential_id=bytes_to_base64url(verified.credential_id),
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=tuple(t for t in transports or () if isinstance(t, str) and t in _TRANSPORTS)[:8],
    )


def verify_assertion(rp: RelyingParty, credential: dict[str, Any], challenge: str, public_key: bytes) -> int:
    """Check a `get()` answer (signature, challenge, origin, RP ID, user verification); the
    authenticator's new signature counter. The counter itself is compared by the caller, which
    knows the stored value under a row lock."""
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=public_key,
            credential_current_sign_count=0,  # compared by the caller, under the row lock
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError):
        raise BadRequestError(PASSKEY_REFUSED, code="passkey_invalid") from None
    return int(verified.new_sign_count)


def counter_went_back(stored: int, new: int) -> bool:
    """WebAuthn §6.1.1: a counter that does not grow (unless both are zero, as synced passkeys send)
    signals a cloned authenticator."""
    return (stored > 0 or new > 0) and new <= stored
