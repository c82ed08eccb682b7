"""API keys for programs: format, digest, what a request check knows about a key, scopes, requests.

A key is `sk-` followed by 64 lowercase hex digits: 32 bytes from `secrets` (256 bits; Open WebUI's
keys carry ~122). It is shown once, when created; the database keeps only its digest, an HMAC-SHA256
under a key derived from `WEBUI_SECRET_KEY` with HKDF (RFC 5869) and an info string used for nothing
else. A slow password hash would add nothing for a 256-bit random secret (nothing to brute-force);
the HMAC, unlike a bare SHA-256, means a copy of the database alone cannot even confirm that a key
found somewhere belongs to this site. Consequence, documented: rotating `WEBUI_SECRET_KEY` ends every
API key, as it ends every session.

Keys are found by digest (a dict in memory, a unique index in the database), never by comparing
the secret itself: a lookup's timing depends on the digest, which an attacker cannot steer towards a
stored one, so there is no byte-by-byte comparison to time (the reason `hmac.compare_digest` exists).

Scopes narrow a key, never widen it: optional upstream names and optional path prefixes, matched on
a path-segment boundary (`/ollama/api` allows `/ollama/api/chat`, not `/ollama/apix`).

Everything here is pure (no I/O); `wardgate.identity.api_keys` stores and checks keys.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from limits import RateLimitItem

from wardgate.errors import BadRequestError
from wardgate.security.ratelimit import parse_rate
from wardgate.storage.models import ApiKey

KEY_PREFIX = "sk-"
KEY_PATTERN = re.compile(r"sk-[0-9a-f]{64}")
DISPLAY_LENGTH = 11  # "sk-" and 8 hex digits: shown in lists and the audit log (32 of 256 bits)
UPSTREAMS = ("ollama", "openai", "app")  # the reverse proxy's upstream names
INVALID_KEY = "Invalid API key."
EXPIRED_KEY = "This API key has expired."
DEFAULT_NAME = "default"  # the key of Open WebUI's one-key-per-user routes
_HKDF_INFO = b"wardgate/api-key-digest/v1"
_MAX_LIFETIME = 10 * 366 * 86400
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
_MAX_PATHS = 32


def generate_key() -> str:
    """A new key: `sk-` and 32 random bytes in hex."""
    return KEY_PREFIX + secrets.token_hex(32)


def is_well_formed(presented: str) -> bool:
    """True when `presented` has the exact shape of a wardgate key (checked before hashing)."""
    return KEY_PATTERN.fullmatch(presented) is not None


def display_prefix(key: str) -> str:
    """The non-secret start of a key, for lists and logs (`sk-1a2b3c4d`)."""
    return key[:DISPLAY_LENGTH]


class ApiKeyHasher:
    """HMAC-SHA256 digests of keys under a key derived from the site's secret."""

    def __init__(self, site_secret: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
        self._key = hkdf.derive(site_secret.encode())

    def digest(self, key: str) -> str:
        """The hex digest stored for `key`."""
        return hmac.digest(self._key, key.encode(), "sha256").hex()


def path_within(path: str, prefixes: Iterable[str]) -> bool:
    """True when `path` equals a prefix or continues it after a `/` (a segment boundary)."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if path in (prefix, base) or path.startswith(base + "/"):
            return True
    return False


def is_plain_path(path: str) -> bool:
    """False for paths an upstream could read differently: dot segments, `//`, `\\`, `%`, controls.

    A prefix check on `/ollama/api/../pull` would pass while the upstream serves `/ollama/pull`;
    such paths are refused whenever a path restriction applies.
    """
    if not path.startswith("/") or "//" in path or "\\" in path or "%" in path:
        return False
    if any(ord(c) < 33 or ord(c) == 127 for c in path):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def check_path_prefixes(values: Sequence[str]) -> tuple[str, ...]:
    """Validate path prefixes (for scopes and `API_KEYS_ALLOWED_ENDPOINTS`); raise ValueError."""
    if len(values) > _MAX_PATHS:
        raise ValueError(f"at most {_MAX_PATHS} path prefixes")
    cleaned = []
    for value in values:
        text = value.strip()
        if not _PATH.fullmatch(text) or len(text) > 256 or not is_plain_path(text):
            raise ValueError(f"{text[:60]!r} is not a path prefix such as /ollama/api")
        cleaned.append(text)
    return tuple(dict.fromkeys(cleaned))


def check_upstreams(values: Sequence[str]) -> tuple[str, ...]:
    """Validate upstream names; raise ValueError naming the accepted ones."""
    unknown = [v for v in values if v not in UPSTREAMS]
    if unknown:
        raise ValueError(f"unknown upstream {unknown[0][:30]!r}; expected {', '.join(UPSTREAMS)}")
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class KeyScope:
    """What a key may reach: None means "no restriction of this kind"."""

    upstreams: frozenset[str] | None = None
    paths: tuple[str, ...] | None = None

    def allows(self, upstream: str, path: str) -> bool:
        """Every restriction must pass; a path restriction also refuses ambiguous paths."""
        if self.upstreams is not None and upstream not in self.upstreams:
            return False
        if self.paths is not None:
            return is_plain_path(path) and path_within(path, self.paths)
        return True


@dataclass(frozen=True, slots=True)
class ApiKeyState:
    """What a request check needs to know about a key (never the key itself)."""

    id: str
    user_id: str
    digest: str
    prefix: str
    session_stamp: str  # the owner's stamp at creation: "sign out everywhere" ends the key
    expires_at: int | None
    scope: KeyScope
    rate: RateLimitItem | None  # the key's own limit, on top of API_KEY_RATE_LIMIT

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyState:
        """Copy the fields of an `ApiKey` row."""
        return cls(
            id=row.id,
            user_id=row.user_id,
            digest=row.key_hash,
            prefix=row.prefix,
            session_stamp=row.session_stamp,
            expires_at=row.expires_at,
            scope=KeyScope(
                frozenset(row.upstreams.split("\n")) if row.upstreams else None,
                tuple(row.paths.split("\n")) if row.paths else None,
            ),
            rate=parse_rate(row.rate_limit) if row.rate_limit else None,
        )


@dataclass(frozen=True, slots=True)
class NewKey:
    """What the owner asks for; None leaves that restriction out."""

    name: str = DEFAULT_NAME
    expires_at: int | None = None
    upstreams: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    rate_limit: str | None = None


def _clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in cleaned):
        raise BadRequestError("A key name must be 1 to 64 printable characters.", code="invalid_key_name")
    return cleaned


def check_new_key(spec: NewKey, now: int) -> NewKey:
    """Validate a request for a key; raise BadRequestError with a helpful message."""
    if spec.expires_at is not None and not now < spec.expires_at <= now + _MAX_LIFETIME:
        raise BadRequestError(
            "The expiry must be in the future and at most ten years away.", code="invalid_expiry"
        )
    for name, values in (("upstreams", spec.upstreams), ("paths", spec.paths)):
        if values is not None and not values:
            raise BadRequestError(
                f"'{name}' must list at least one entry, or be left out for no restriction.",
                code="empty_scope",
            )
    try:
        upstreams = check_upstreams(spec.upstreams) if spec.upstreams is not None else None
        paths = check_path_prefixes(spec.paths) if spec.paths is not None else None
    except ValueError as exc:
        raise BadRequestError(f"Invalid scope: {exc}.", code="invalid_scope") from None
    if spec.rate_limit is not None:
        try:
            parse_rate(spec.rate_limit)
        except ValueError as exc:
            raise BadRequestError(f"rate_limit: {exc}.", code="invalid_rate_limit") from None
    return NewKey(_clean_name(spec.name), spec.expires_at, upstreams, paths, spec.rate_limit)
