"""A software WebAuthn authenticator for API tests: what a browser and a platform authenticator send
(packed as WebAuthn §6.1 and §6.5 lay them out, "none" attestation, ES256), so that the server's
checks can be tried one by one — wrong origin, stale challenge, a counter going back, no user
verification. The server side under test is py_webauthn's, unchanged; real Chromium with a virtual
authenticator is driven in tests/e2e."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

UP, UV, AT = 0x01, 0x04, 0x40


@dataclass
class Authenticator:
    """One device holding discoverable credentials for one relying party."""

    rp_id: str
    origin: str
    counter: int = 0
    credentials: dict[bytes, tuple[ec.EllipticCurvePrivateKey, bytes]] = field(default_factory=dict)

    def _auth_data(self, flags: int, attested: bytes = b"") -> bytes:
        self.counter += 1
        rp_hash = hashlib.sha256(self.rp_id.encode()).digest()
        return rp_hash + bytes([flags]) + self.counter.to_bytes(4, "big") + attested

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin, "crossOrigin": False}
        return json.dumps(data).encode()

    def create(self, options: dict[str, Any], *, origin: str | None = None) -> dict[str, Any]:
        """Answer `navigator.credentials.create()`: a new ES256 credential."""
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps(
            {1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")}
        )
        credential_id = secrets.token_bytes(32)
        handle = base64url_to_bytes(options["user"]["id"])
        self.credentials[credential_id] = (key, handle)
        attested = bytes(16) + len(credential_id).to_bytes(2, "big") + credential_id + cose
        auth_data = self._auth_data(UP | UV | AT, attested)
        client_data = self._client_data("webauthn.create", options["challenge"], origin)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        cid = bytes_to_base64url(credential_id)
        return {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "attestationObject": bytes_to_base64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        verified: bool = True,
        credential_id: bytes | None = None,
    ) -> dict[str, Any]:
        """Answer `navigator.credentials.get()` with one credential (the allowed one, or any)."""
        allowed = [base64url_to_bytes(c["id"]) for c in options.get("allowCredentials") or []]
        chosen = credential_id or next(c for c in self.credentials if not allowed or c in allowed)
        key, handle = self.credentials[chosen]
        auth_data = self._auth_data(UP | (UV if verified else 0))
        client_data = self._client_data("webauthn.get", options["challenge"], origin)
        signature = key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        cid = bytes_to_base64url(chosen)
        return {
            "id": cid,
            "rawId": cid,
            "type": "public-key",
            "response": {
                "clientDataJSON": bytes_to_base64url(client_data),
                "authenticatorData": bytes_to_base64url(auth_data),
                "signature": bytes_to_base64url(signature),
                "userHandle": bytes_to_base64url(handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
