"""The WebAuthn ceremonies' options and checks, with py_webauthn (loaded at the first ceremony: see
`passkeys`). Every ceremony requires user verification; the origin and RP ID are the configured ones.
"""

from __future__ import annotations

import json
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from wardgate.errors import BadRequestError
from wardgate.mfa.passkeys import (
    PASSKEY_REFUSED,
    TIMEOUT_MS,
    TRANSPORTS,
    NewPasskey,
    RelyingParty,
    base64url_to_bytes,
    bytes_to_base64url,
)

# What py_webauthn raises for an answer it refuses or cannot read: its own errors, and builtin ones
# from its parsers. IndexError (a public key that is an empty CBOR array, found by review) and
# AttributeError (an android-safetynet statement of the wrong shape) were found by fuzzing both
# ceremonies with malformed attestation objects, keys and assertions (70,000 answers), and were
# the only ones outside the first four.
_MALFORMED = (WebAuthnException, ValueError, KeyError, TypeError, IndexError, AttributeError)


def _descriptors(credentials: list[tuple[str, tuple[str, ...]]]) -> list[PublicKeyCredentialDescriptor]:
    return [
        PublicKeyCredentialDescriptor(
            id=base64url_to_bytes(cid),
            transports=[AuthenticatorTransport(t) for t in transports if t in TRANSPORTS],
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
    except _MALFORMED:
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
        transports=tuple(t for t in transports or () if isinstance(t, str) and t in TRANSPORTS)[:8],
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
    except _MALFORMED:
        raise BadRequestError(PASSKEY_REFUSED, code="passkey_invalid") from None
    return int(verified.new_sign_count)
