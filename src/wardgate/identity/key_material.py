"""API keys for programs: their format, their digest, and the checks of a request for a new one.

A key is `sk-` followed by 64 lowercase hex digits: 32 bytes from `secrets` (256 bits; Open WebUI's
keys carry ~122). It is shown once, when created; the database keeps only its digest, an HMAC-SHA256
under a key derived from `WEBUI_SECRET_KEY` with HKDF (RFC 5869) and an info string used for nothing
else. A slow password hash would add nothing for a 256-bit random secret (nothing to brute-force);
the HMAC, unlike a bare SHA-256, means a copy of the database alone cannot even confirm that a key
found somewhere belongs to this site. Rotating `WEBUI_SECRET_KEY` keeps keys working while the
earlier secret is listed in `WEBUI_SECRET_KEY_FALLBACKS`: a key is looked up under the current
secret's digest first (one HMAC, the common case), then under each fallback's; a key found under a
fallback is re-digested under the current secret (`ApiKeyService`), so that it outlives the fallback.

Keys are found by digest (a dict in memory, a unique index in the database), never by comparing
the secret itself: a lookup's timing depends on the digest, which an attacker cannot steer towards a
stored one, so there is no byte-by-byte comparison to time (the reason `hmac.compare_digest` exists).

Scopes narrow a key, never widen it: optional upstream names and optional path prefixes, matched on
a path-segment boundary (`/ollama/api` allows `/ollama/api/chat`, not `/ollama/apix`).

Everything here is pure (no I/O); `wardgate.identity.api_keys` stores and checks keys, and
`wardgate.sessions.records` holds what a request check knows of a stored key.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from wardgate.config.model_access import Budget, parse_patterns
from wardgate.config.values import parse_rate, path_prefixes
from wardgate.errors import BadRequestError
from wardgate.security.keys import API_KEY_DIGEST, SecretRing, as_ring

KEY_PREFIX = "sk-"
KEY_PATTERN = re.compile(r"sk-[0-9a-f]{64}")
DISPLAY_LENGTH = 11  # "sk-" and 8 hex digits: shown in lists and the audit log (32 of 256 bits)
UPSTREAMS = ("ollama", "openai", "app", "forward-auth")  # the proxy's upstreams, and forward auth
DEFAULT_NAME = "default"  # the key of Open WebUI's one-key-per-user routes
_MAX_LIFETIME = 10 * 366 * 86400


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
    """HMAC-SHA256 digests of keys under a key derived from each secret of the site's ring."""

    def __init__(self, secrets: SecretRing | str) -> None:
        ring = as_ring(secrets)
        self.current_id = ring.current_id
        (_, self._key), *self._fallbacks = ring.derived(API_KEY_DIGEST)

    def digest(self, key: str) -> str:
        """The hex digest stored for `key` (under the current secret)."""
        return hmac.digest(self._key, key.encode(), "sha256").hex()

    def fallback_digests(self, key: str) -> Iterator[tuple[str, str]]:
        """(key id, digest) of `key` under each fallback secret, newest first, computed as asked."""
        data = key.encode()
        for kid, derived in self._fallbacks:
            yield kid, hmac.digest(derived, data, "sha256").hex()


def check_upstreams(values: Sequence[str]) -> tuple[str, ...]:
    """Validate upstream names; raise ValueError naming the accepted ones."""
    unknown = [v for v in values if v not in UPSTREAMS]
    if unknown:
        raise ValueError(f"unknown upstream {unknown[0][:30]!r}; expected {', '.join(UPSTREAMS)}")
    return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class NewKey:
    """What the owner asks for; None leaves that restriction out."""

    name: str = DEFAULT_NAME
    expires_at: int | None = None
    upstreams: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    rate_limit: str | None = None
    models: tuple[str, ...] | None = None
    token_budget: Budget | None = None


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
    for name, values in (("upstreams", spec.upstreams), ("paths", spec.paths), ("models", spec.models)):
        if values is not None and not values:
            raise BadRequestError(
                f"'{name}' must list at least one entry, or be left out for no restriction.",
                code="empty_scope",
            )
    try:
        upstreams = check_upstreams(spec.upstreams) if spec.upstreams is not None else None
        paths = path_prefixes(spec.paths) if spec.paths is not None else None
    except ValueError as exc:
        raise BadRequestError(f"Invalid scope: {exc}.", code="invalid_scope") from None
    if spec.rate_limit is not None:
        try:
            parse_rate(spec.rate_limit)
        except ValueError as exc:
            raise BadRequestError(f"rate_limit: {exc}.", code="invalid_rate_limit") from None
    try:
        models = parse_patterns(list(spec.models)) if spec.models is not None else None
    except ValueError as exc:
        raise BadRequestError(f"models: {exc}.", code="invalid_models") from None
    return replace(spec, name=_clean_name(spec.name), upstreams=upstreams, paths=paths, models=models)
