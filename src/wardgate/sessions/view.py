"""The revocation view's contents: users, revoked sessions and API keys as one process holds them
(`wardgate.sessions.registry` owns one, loads it, and keeps it in step with the database).

Readers on the event loop take no lock: each change keeps the view consistent for a lookup at every
step (a key's new entry is in place before its old one leaves), and key changes are counted
(`api_key_writes`) so that a lookup can tell a miss that raced one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wardgate.errors import AuthenticationError
from wardgate.security.tokens import Claims
from wardgate.sessions.records import INVALID_KEY, SESSION_ENDED, ApiKeyState, UserState, check_api_key_owner

_CLOCK_SKEW = 60  # seconds of leeway between instances' clocks


@dataclass
class SessionView:
    """In-memory users and revoked sessions, with the time of the last good synchronisation."""

    users: dict[str, UserState] = field(default_factory=dict)
    emails: dict[str, str] = field(default_factory=dict)  # email -> user id (a service key's person)
    revoked: dict[str, int | None] = field(default_factory=dict)  # session id -> expiry (None: never)
    api_keys: dict[str, ApiKeyState] = field(default_factory=dict)  # digest -> key
    api_key_ids: dict[str, str] = field(default_factory=dict)  # key id -> digest
    api_key_writes: int = 0  # bumped before and after each key change: odd while one is under way
    synced_at: float = field(default_factory=time.monotonic)
    retired: dict[tuple[str, str], int] = field(default_factory=dict)  # (user id, stamp) replaced -> when
    deleted: dict[str, int] = field(default_factory=dict)  # users deleted since start -> when
    token_lifetime: int | None = None  # seconds; after it, tokens from before a change expire anyway

    def check(self, claims: Claims) -> UserState | None:
        """The live user behind valid claims; AuthenticationError when the view knows the session ended;
        None when only the database can tell (a user or stamp newer than this view: signed up or
        signed in on another instance since the last sync)."""
        if claims.session_id in self.revoked or claims.user_id in self.deleted:
            raise AuthenticationError(SESSION_ENDED, code="session_revoked")
        if (claims.user_id, claims.session_stamp) in self.retired:
            raise AuthenticationError(SESSION_ENDED, code="session_revoked")
        user = self.users.get(claims.user_id)
        if user is None or user.session_stamp != claims.session_stamp:
            return None
        if not user.active:
            raise AuthenticationError(SESSION_ENDED, code="session_revoked")
        return user

    def put_user(self, user: UserState) -> None:
        """Record a user's current state (a replaced stamp is remembered as ended)."""
        old = self.users.get(user.id)
        if old is not None and old.session_stamp != user.session_stamp:
            self.retired[(user.id, old.session_stamp)] = int(time.time())
        if old is not None and old.email != user.email and self.emails.get(old.email) == user.id:
            del self.emails[old.email]
        self.users[user.id] = user
        self.emails[user.email] = user.id

    def drop_user(self, user_id: str) -> None:
        """Forget a deleted user: every token of theirs is refused."""
        old = self.users.pop(user_id, None)
        if old is not None and self.emails.get(old.email) == user_id:
            del self.emails[old.email]
        self.deleted[user_id] = int(time.time())

    def user_by_email(self, email: str) -> UserState | None:
        """The user with this (normalised) address, as the view knows them."""
        user_id = self.emails.get(email)
        return self.users.get(user_id) if user_id is not None else None

    def revoke(self, session_id: str, expires_at: int | None) -> None:
        """Refuse this session from now on."""
        self.revoked[session_id] = expires_at

    def check_api_key(self, digest: str, now: int) -> tuple[ApiKeyState, UserState]:
        """Return the live key with this digest and its owner, or raise AuthenticationError."""
        key = self.api_keys.get(digest)
        if key is None:
            raise AuthenticationError(INVALID_KEY, code="unknown_api_key")
        return key, check_api_key_owner(key, self.users.get(key.user_id), now)

    def api_key_by_id(self, key_id: str) -> ApiKeyState | None:
        """The key with this id as the view holds it now (its digest may have changed since)."""
        digest = self.api_key_ids.get(key_id)
        return self.api_keys.get(digest) if digest is not None else None

    def put_api_key(self, key: ApiKeyState) -> None:
        """Record a key (new, or reloaded after a change). A re-digested key's earlier digest goes:
        left behind, it would still admit the key after its revocation, which drops the new one only.
        The new entry is in place before the old one leaves, so a lookup finds one or the other."""
        self.api_key_writes += 1
        old = self.api_key_ids.get(key.id)
        self.api_keys[key.digest] = key
        self.api_key_ids[key.id] = key.digest
        if old is not None and old != key.digest:
            self.api_keys.pop(old, None)
        self.api_key_writes += 1

    def drop_api_key(self, key_id: str) -> None:
        """Forget a revoked key: it is refused from now on."""
        self.api_key_writes += 1
        digest = self.api_key_ids.pop(key_id, None)
        if digest is not None:
            self.api_keys.pop(digest, None)
        self.api_key_writes += 1

    def prune(self, now: int) -> None:
        """Drop what can no longer refuse anything: revoked sessions whose tokens have expired
        anyway, replaced stamps and deleted users older than a token's lifetime (every token issued
        before has expired), and keys whose owner's sessions ended.

        Expired keys stay (as their rows do, until revoked), so that they are refused as expired.
        """
        expired = [sid for sid, exp in self.revoked.items() if exp is not None and exp < now]
        for sid in expired:
            del self.revoked[sid]
        if self.token_lifetime is not None:
            before = now - self.token_lifetime - _CLOCK_SKEW
            self.retired = {k: at for k, at in self.retired.items() if at >= before}
            self.deleted = {k: at for k, at in self.deleted.items() if at >= before}
        for key in list(self.api_keys.values()):
            owner = self.users.get(key.user_id)
            if owner is None or owner.session_stamp != key.session_stamp:
                self.drop_api_key(key.id)
