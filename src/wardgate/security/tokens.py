"""Session tokens: HS256 JWTs with Open WebUI's claims (`id`, `jti`, `iat`, `exp`, `typ`).

Wardgate adds `session_stamp` (as Open WebUI does) so that "revoke every session of this user" is an
exact comparison, not a clock comparison. Verification is pure CPU: signature, algorithm pinned to
HS256 (RFC 8725 §3.1: never let the token choose), required claims, expiry. Whether the session is
still live is the revocation view's business (`wardgate.sessions.registry`).

The codec takes a key ring, newest first (`WEBUI_SECRET_KEY`, then `WEBUI_SECRET_KEY_FALLBACKS`):
it signs with the first and names it in the header's `kid` (RFC 7515 §4.1.4). A token naming a key
of the ring is checked with that key alone (one HMAC, whatever the ring's length); a token naming
another key is refused, so a key dropped from the ring ends its tokens; a token without `kid` (issued
before key ids) is checked with each key in turn, as itsdangerous does.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import jwt

from wardgate.errors import AuthenticationError
from wardgate.security.keys import SecretRing

if TYPE_CHECKING:
    from jwt.types import Options  # PyJWT 2.10 and later

ALGORITHM = "HS256"
SESSION_TYPE = "session"
MAX_TOKEN_LENGTH = 4096
VERIFIED_CACHE_SIZE = 32_768  # ~0.5 KB each (token and claims): 20,000 people active at once all hit
_REQUIRED = ("id", "jti", "iat", "typ", "session_stamp")
EXPIRED = "This session has expired. Please sign in again."
EXPIRED_CODE = "token_expired"


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims of a session token."""

    user_id: str
    session_id: str
    session_stamp: str
    issued_at: int
    expires_at: int | None
    mfa: bool = False  # an identity provider showed a second factor when the session began


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token and the facts about it the caller stores."""

    token: str
    session_id: str
    issued_at: int
    expires_at: int | None


class TokenCodec:
    """Issue and verify session JWTs with a key ring (newest key first)."""

    def __init__(self, keys: Sequence[str], lifetime: timedelta | None) -> None:
        if not keys or any(not k for k in keys):
            raise ValueError("at least one non-empty signing key is required")
        ring = SecretRing(tuple(keys))
        self._keys = ring.secrets
        self._by_id = dict(zip(ring.ids, ring.secrets, strict=True))
        self._signing = ring.secrets[0], {"kid": ring.current_id}
        # The encoded header of every token wardgate issues, as PyJWT writes it, and the keys it
        # allows: the common case picks its key with one dict lookup instead of parsing the header.
        self._by_header: dict[str, tuple[str, ...]] = {
            _encoded_header({"kid": kid}): (key,) for kid, key in self._by_id.items()
        }
        self._by_header[_encoded_header({})] = self._keys  # issued before key ids
        self.lifetime = lifetime
        # Verified tokens, by their exact text: a repeat costs a dict lookup instead of an HMAC and
        # base64 work. Only successes are cached (lru_cache never stores an exception), expiry is
        # re-checked on every hit, and revocation is the view's job on every request anyway.
        self._verified = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._verify_uncached)

    def issue(
        self, user_id: str, session_stamp: str, *, now: float | None = None, mfa: bool = False
    ) -> IssuedToken:
        """Sign a new session token for `user_id`; `mfa`: an identity provider showed a second factor
        at this sign-in (a claim of wardgate's, so that a role that requires one is checked without
        I/O)."""
        issued_at = int(now if now is not None else time.time())
        expires_at = issued_at + int(self.lifetime.total_seconds()) if self.lifetime else None
        session_id = str(uuid.uuid4())
        claims: dict[str, object] = {
            "id": user_id,
            "jti": session_id,
            "iat": issued_at,
            "typ": SESSION_TYPE,
            "session_stamp": session_stamp,
        }
        if expires_at is not None:
            claims["exp"] = expires_at
        if mfa:
            claims["mfa"] = True
        key, header = self._signing
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers=header)
        return IssuedToken(token=token, session_id=session_id, issued_at=issued_at, expires_at=expires_at)

    def verify(self, token: str) -> Claims:
        """Return the claims of a valid token or raise AuthenticationError (never anything else)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("Invalid or expired session token.", code="invalid_token")
        claims = self._verified(token)
        if claims.expires_at is not None and claims.expires_at <= time.time():  # as PyJWT: exp <= now
            raise AuthenticationError(EXPIRED, code=EXPIRED_CODE)
        return claims

    def signed_here(self, token: str) -> bool:
        """Whether a key of the ring signed `token`, whatever its claims say: expired, issued ahead
        of this clock by an instance whose clock runs fast, or not a session's. Such a token is
        wardgate's own and is never passed on to an upstream."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return False
        try:
            candidates = self._candidates(token)
        except AuthenticationError:
            return False
        for key in candidates:
            try:
                jwt.decode(token, key, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError:
                return False
            return True
        return False

    def _verify_uncached(self, token: str) -> Claims:
        payload = self._decode(token)
        try:
            if payload["typ"] != SESSION_TYPE:
                raise AuthenticationError("Invalid or expired session token.", code="invalid_token")
            exp = payload.get("exp")
            return Claims(
                user_id=_text(payload["id"]),
                session_id=_text(payload["jti"]),
                session_stamp=_text(payload["session_stamp"]),
                issued_at=_number(payload["iat"]),
                expires_at=None if exp is None else _number(exp),
                mfa=payload.get("mfa") is True,
            )
        except (KeyError, TypeError, ValueError):
            raise AuthenticationError("Invalid or expired session token.", code="invalid_token") from None

    def _candidates(self, token: str) -> tuple[str, ...]:
        """The keys that may have signed `token`: the one its `kid` names, or all for a token without."""
        known = self._by_header.get(token.partition(".")[0])
        if known is not None:
            return known
        try:
            kid = jwt.get_unverified_header(token).get("kid")  # PyJWT refuses a `kid` that is not a string
        except jwt.PyJWTError:
            raise AuthenticationError("Invalid or expired session token.", code="invalid_token") from None
        if kid is None:
            return self._keys
        key = self._by_id.get(kid)
        if key is None:  # a key this ring does not hold (dropped, or never ours): no other key is tried
            raise AuthenticationError("Invalid or expired session token.", code="invalid_token")
        return (key,)

    def _decode(self, token: str) -> dict[str, object]:
        for key in self._candidates(token):
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    options={"require": list(_REQUIRED), "verify_exp": True, "verify_iat": True},
                )
            except jwt.InvalidSignatureError:
                continue  # try the next (older) key
            except jwt.ExpiredSignatureError:
                # Raised only once the signature verified: an authentic token that has run out, told
                # apart from a forged one so that clients sign in again and no limiter counts it.
                raise AuthenticationError(EXPIRED, code=EXPIRED_CODE) from None
            except jwt.PyJWTError:
                break
        raise AuthenticationError("Invalid or expired session token.", code="invalid_token")


_SIGNATURE_ONLY: Options = {
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_aud": False,
    "verify_iss": False,
}


def _encoded_header(header: dict[str, str]) -> str:
    """The first segment of a token PyJWT signs with `header` (HS256)."""
    return jwt.encode({}, "k" * 32, algorithm=ALGORITHM, headers=header or None).partition(".")[0]


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise ValueError("claim must be a short non-empty string")
    return value


def _number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("claim must be a number")
    return int(value)
