"""What the revocation view knows of a user and of an API key, and the pure checks on them.

Plain values copied from the database rows, so that a request check needs no I/O: the view holds one
`UserState` per user and one `ApiKeyState` per key (never the key itself, only its digest).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from limits import RateLimitItem

from wardgate.config.model_access import Budget, parse_budget
from wardgate.config.values import Role, is_plain_path, parse_rate
from wardgate.errors import AuthenticationError
from wardgate.storage.models import ApiKey, User

SESSION_ENDED = "This session has ended. Please sign in again."
INVALID_KEY = "Invalid API key."
EXPIRED_KEY = "This API key has expired."
MODEL_SERVERS = frozenset({"ollama", "openai"})  # the upstreams a service key may act on


@dataclass(frozen=True, slots=True)
class UserState:
    """What a request check needs to know about a user."""

    id: str
    email: str
    name: str
    role: Role
    active: bool
    session_stamp: str
    profile_image_url: str = "/user.png"
    groups: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] | None = None  # None: what the role and groups allow
    token_budget: Budget | None = None
    mfa: bool = False  # has a confirmed second factor

    @classmethod
    def from_row(cls, row: User, groups: tuple[str, ...] = ()) -> UserState:
        """Copy the fields of a `User` row (and its groups, read with `load_groups`)."""
        return cls(
            row.id,
            row.email,
            row.name,
            Role(row.role),
            row.active,
            row.session_stamp,
            row.profile_image_url,
            groups,
            tuple(json.loads(row.allowed_models)) if row.allowed_models is not None else None,
            parse_budget(json.loads(row.token_budget)) if row.token_budget else None,
            bool(row.mfa_enabled),
        )


def path_within(path: str, prefixes: Iterable[str]) -> bool:
    """True when `path` equals a prefix or continues it after a `/` (a segment boundary)."""
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if path in (prefix, base) or path.startswith(base + "/"):
            return True
    return False


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
    models: tuple[str, ...] | None = None  # None: what its owner may use
    token_budget: Budget | None = None
    mfa: bool = False  # has a confirmed second factor
    key_id: str | None = None  # the secret `digest` is under (None: recorded before key ids)
    acts_for_users: bool = False  # a service key: acts for the person each call names, on model servers

    @classmethod
    def from_row(cls, row: ApiKey) -> ApiKeyState:
        """Copy the fields of an `ApiKey` row. A service key reaches the model servers and nothing else
        (not the app behind wardgate, not forward auth), whatever its row says."""
        upstreams = frozenset(row.upstreams.split("\n")) if row.upstreams else None
        if row.acts_for_users:
            upstreams = (upstreams or MODEL_SERVERS) & MODEL_SERVERS
        return cls(
            id=row.id,
            user_id=row.user_id,
            digest=row.key_hash,
            prefix=row.prefix,
            session_stamp=row.session_stamp,
            expires_at=row.expires_at,
            scope=KeyScope(upstreams, tuple(row.paths.split("\n")) if row.paths else None),
            rate=parse_rate(row.rate_limit).item if row.rate_limit else None,
            models=tuple(row.models.split("\n")) if row.models else None,
            token_budget=parse_budget(json.loads(row.token_budget)) if row.token_budget else None,
            key_id=row.key_id,
            acts_for_users=bool(row.acts_for_users),
        )


def check_api_key_owner(key: ApiKeyState, owner: UserState | None, now: int) -> UserState:
    """The key's owner if the key may be used now: unexpired, owner active, owner's stamp unchanged."""
    if key.expires_at is not None and key.expires_at <= now:
        raise AuthenticationError(EXPIRED_KEY, code="api_key_expired")
    if owner is None or not owner.active or owner.session_stamp != key.session_stamp:
        raise AuthenticationError(INVALID_KEY, code="api_key_ended")
    return owner
