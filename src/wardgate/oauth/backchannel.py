"""OpenID Connect Back-Channel Logout 1.0: a provider tells wardgate, server to server, that a
person's session there ended; every wardgate session it began ends too, on every instance.

The logout token is checked as §2.6 says: its signature against the provider's keys (the ID token's
algorithms), `iss`, `aud`, `iat` (recent), the back-channel `events` member, no `nonce`, a `jti`,
and `sid` and/or `sub`. A `jti` is accepted once across instances (the table of used sign-in states,
which every instance shares); a replay is refused.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from wardgate.errors import BadRequestError
from wardgate.oauth.metadata import ProviderDirectory, ServerMetadata
from wardgate.oauth.presets import ProviderConfig
from wardgate.oauth.refusals import LOGOUT_REFUSED as REFUSED

log = logging.getLogger(__name__)

EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_AGE = 300  # seconds a logout token may be old (its `iat`)
LEEWAY = 60  # clock skew between the provider and wardgate
MAX_TOKEN = 16_384
UNSIGNED = "logout_token_unsigned"  # refused before its signature held: not audited (anyone can send)


@dataclass(frozen=True, slots=True)
class Logout:
    """A verified logout: which provider session (`sid`) and/or which person (`sub`) ended."""

    issuer: str
    jti: str
    sid: str | None
    sub: str | None

    @property
    def forget_after(self) -> int:
        """When its single-use record may go: no copy of the token is accepted after then anyway."""
        return int(time.time()) + MAX_AGE + 2 * LEEWAY

    @property
    def use_id(self) -> str:
        """The token's single-use id (an `oauth_state_uses` key, 64 characters at most)."""
        return "bcl:" + hashlib.sha256(f"{self.issuer}\n{self.jti}".encode()).hexdigest()[:56]


def _refuse(reason: str, code: str = "logout_token_invalid") -> BadRequestError:
    log.warning("back-channel logout refused: %s", reason)
    return BadRequestError(REFUSED, code=code)


async def verify_logout_token(
    directory: ProviderDirectory, provider: ProviderConfig, metadata: ServerMetadata, token: str
) -> Logout:
    """The verified logout of `token`; BadRequestError (400, as §2.8 asks) otherwise."""
    if not token or len(token) > MAX_TOKEN:
        raise _refuse("missing or oversized", UNSIGNED)
    try:
        try:
            decoded = jwt.decode(token, await directory.key_set(provider), algorithms=metadata.signing_algs)
        except InvalidKeyIdError:  # the provider rotated its keys since we fetched them
            keys: KeySet = await directory.key_set(provider, refresh=True)
            decoded = jwt.decode(token, keys, algorithms=metadata.signing_algs)
    except (JoseError, ValueError, TypeError) as exc:
        raise _refuse(f"signature or form ({type(exc).__name__})", UNSIGNED) from None
    typ = str(decoded.header.get("typ", "logout+jwt")).lower()
    if typ not in ("logout+jwt", "application/logout+jwt", "jwt"):  # §2.4: explicit typing, when given
        raise _refuse(f"typ {typ[:40]!r}")
    return _checked(dict(decoded.claims), metadata, provider)


def _checked(claims: dict[str, Any], metadata: ServerMetadata, provider: ProviderConfig) -> Logout:
    issuer = (metadata.issuer or "").replace("{tenantid}", str(claims.get("tid", "")))
    if claims.get("iss") not in (issuer, *provider.extra_issuers):
        raise _refuse("issuer")
    audience = claims.get("aud")
    if provider.client_id not in (audience if isinstance(audience, list) else [audience]):
        raise _refuse("audience")
    now = time.time()
    iat, exp = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(iat, int | float)
        or isinstance(iat, bool)
        or not now - MAX_AGE - LEEWAY <= iat <= now + LEEWAY
    ):
        raise _refuse("iat missing or not recent")
    if exp is not None and (not isinstance(exp, int | float) or exp < now - LEEWAY):
        raise _refuse("expired")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
        raise _refuse("no back-channel logout event")
    if "nonce" in claims:  # §2.6 step 7: forbids it, so an ID token cannot be passed off as one
        raise _refuse("nonce present")
    jti, sid, sub = claims.get("jti"), claims.get("sid"), claims.get("sub")
    if not _short(jti):
        raise _refuse("jti")
    if (sid is None and sub is None) or any(v is not None and not _short(v) for v in (sid, sub)):
        raise _refuse("neither a valid sid nor sub")
    return Logout(issuer=str(claims["iss"]), jti=str(jti), sid=sid, sub=sub)


def _short(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255
