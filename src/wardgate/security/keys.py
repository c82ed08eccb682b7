"""Sub-keys derived from the site's secret: one derivation, a separate key for each purpose.

`WEBUI_SECRET_KEY` signs session tokens; everything else that needs a key derives its own with
HKDF-SHA256 (RFC 5869) under an `info` label used for nothing else, so that no two purposes ever
share key material and a key for one cannot be turned into a key for another.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

API_KEY_DIGEST = b"wardgate/api-key-digest/v1"
OAUTH_TOKENS = b"wardgate/oauth-session-token-encryption/v1"
OAUTH_LOGIN_STATE = b"wardgate/oauth-login-state/v1"
MFA_SECRETS = b"wardgate/mfa-secret-encryption/v1"
RECOVERY_CODE_DIGEST = b"wardgate/mfa-recovery-code-digest/v1"
PASSKEY_CEREMONY = b"wardgate/passkey-ceremony/v1"


def derive_key(secret: str, info: bytes) -> bytes:
    """32 bytes for the purpose named by `info`, derived from `secret`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret.encode("utf-8"))


def fernet_key(secret: str, info: bytes) -> bytes:
    """A Fernet key (url-safe base64 of 32 derived bytes) for the purpose named by `info`."""
    return base64.urlsafe_b64encode(derive_key(secret, info))
