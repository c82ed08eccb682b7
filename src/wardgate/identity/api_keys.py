"""API keys of accounts: create, list and revoke them, and admit a presented key on the hot path.

Rules (docs/api-keys.md):

- `ENABLE_API_KEYS` gates creating and using keys. Admins may create keys; other users only with
  `USER_PERMISSIONS_FEATURES_API_KEYS`. Both are checked again at every use, so switching the
  permission off (or demoting an admin) stops their keys at once.
- Keys end with their owner's sessions: deleting or disabling the account, "sign out everywhere" and
  a password change delete them (`AccountService`), and the session-stamp check refuses them on every
  instance at once, even before the deletion reaches it.
- Admission is pure memory in one process (view lookup by digest, in-memory rate limit; worker
  processes share a file for it); only a stale view or a refusal touches the database (a key the
  view does not hold is looked up there first: made on another instance a moment ago, it is valid
  before this view hears of it; `Authenticator`).
- Rotation (`WEBUI_SECRET_KEY_FALLBACKS`): a key is looked up under the current secret's digest, then
  under each fallback's; one found under a fallback's is stored again under the current secret's
  (`redigests`), so that it keeps working once the fallback is dropped.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog, request_origin
from wardgate.config.values import Role, parse_rate
from wardgate.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StoreUnavailableError,
)
from wardgate.identity.key_material import (
    ApiKeyHasher,
    NewKey,
    check_new_key,
    display_prefix,
    generate_key,
    is_well_formed,
)
from wardgate.identity.redigests import PendingRedigests
from wardgate.identity.rules import require_approved
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.sessions.changes import log_api_key_change
from wardgate.sessions.records import (
    INVALID_KEY,
    MODEL_SERVERS,
    SESSION_ENDED,
    ApiKeyState,
    KeyScope,
    UserState,
    check_api_key_owner,
)
from wardgate.sessions.registry import SessionRegistry, load_groups
from wardgate.storage.models import ApiKey, User

_REFUSAL_AUDIT = Limit.of("api-key-refusal-audit", parse_rate("1/1m"))


@dataclass(frozen=True, slots=True)
class ApiKeyPolicy:
    """The deployment's API-key settings, as plain values."""

    enabled: bool
    users_may_create: bool
    rate: Limit  # API_KEY_RATE_LIMIT
    endpoints: KeyScope  # API_KEYS_ALLOWED_ENDPOINTS, for every key
    ipv6_prefix: int  # RATE_LIMIT_IPV6_PREFIX: how refusals from one client are grouped
    max_per_user: int = 50


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: the secret (shown once, then forgotten) and its stored row."""

    key: str
    row: ApiKey


@dataclass(frozen=True, slots=True)
class Admitted:
    """A presented key that may be used now, and its owner."""

    key: ApiKeyState
    user: UserState


def _check_service_key(owner: UserState, spec: NewKey) -> None:
    """A key that acts for people is an administrator's to make, and reaches only the model servers:
    on the app behind wardgate it would sign anyone in (the identity headers name the person)."""
    if owner.role != Role.ADMIN:
        raise PermissionDeniedError(
            "Only administrators may create a key that acts for people (acts_for_users).",
            code="service_key_not_allowed",
        )
    if spec.upstreams is not None and not set(spec.upstreams) <= MODEL_SERVERS:
        raise BadRequestError(
            "A key that acts for people reaches only the model servers: upstreams may list "
            "'ollama' and 'openai' only.",
            code="invalid_scope",
        )


class ApiKeyService:
    """API-key operations over the database, keeping the in-memory view coherent."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: SessionRegistry,
        hasher: ApiKeyHasher,
        policy: ApiKeyPolicy,
        audit: AuditLog,
        *,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._hasher = hasher
        self.policy = policy
        self._audit = audit
        # This instance's own counts on purpose: a per-key limit must not cost a Redis round trip
        # per request (with N instances a key gets up to N times its rate; documented). Its worker
        # processes count together, through the file they share (`limiter`); one process, in memory.
        self._limiter = limiter or RateLimiter()
        # at most one audit row per key (or client network) and reason a minute
        self._refusals = RateLimiter(ipv6_prefix=policy.ipv6_prefix)
        self.redigests = PendingRedigests(sessions, registry, hasher.current_id)

    # --- creating and revoking --------------------------------------------------------------

    def ensure_may_create(self, user: UserState) -> None:
        """Raise PermissionDeniedError unless this user may hold (and so create) keys."""
        if not self.policy.enabled:
            raise PermissionDeniedError("API keys are disabled on this site.", code="api_keys_disabled")
        require_approved(user)
        if user.role != Role.ADMIN and not self.policy.users_may_create:
            raise PermissionDeniedError(
                "You do not have permission to create API keys.", code="api_key_creation_not_allowed"
            )

    def create(
        self, owner: UserState, spec: NewKey, *, replace: bool = False, acts_for_users: bool = False
    ) -> CreatedKey:
        """Create a key for `owner` (replace=True first revokes their keys of the same name).

        `acts_for_users` makes a service key (`wardgate.proxy.acting`): admins only, and only for the
        model servers."""
        key_id, secret = str(uuid.uuid4()), generate_key()
        detail = f"key={key_id} prefix={display_prefix(secret)}" + (" service" if acts_for_users else "")
        with self._audit.attempt("api_key.created", actor=owner.email, subject=owner.email, detail=detail):
            self.ensure_may_create(owner)
            if acts_for_users:
                _check_service_key(owner, spec)
            spec = check_new_key(spec, int(time.time()))
            created, dropped = self._insert(owner, key_id, secret, spec, replace, acts_for_users)
        for old_id in dropped:
            self._registry.api_key_changed(old_id, None)
        self._registry.api_key_changed(created.row.id, ApiKeyState.from_row(created.row))
        return created

    def _insert(
        self, owner: UserState, key_id: str, secret: str, spec: NewKey, replace: bool, acts_for_users: bool
    ) -> tuple[CreatedKey, list[str]]:
        with self._sessions() as db, db.begin():
            user = db.get(User, owner.id, with_for_update=True)  # one key creation per user at a time
            if user is None or not user.active or user.session_stamp != owner.session_stamp:
                # The caller's sessions ended meanwhile ("sign out everywhere" racing this request):
                # a key bound to the new stamp would outlive them.
                raise AuthenticationError(SESSION_ENDED, code="session_revoked")
            dropped = self._delete_named(db, owner.id, spec.name) if replace else []
            count = db.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == owner.id))
            if (count or 0) >= self.policy.max_per_user:
                raise BadRequestError(
                    f"An account can hold at most {self.policy.max_per_user} API keys; revoke one first.",
                    code="too_many_api_keys",
                )
            row = ApiKey(
                id=key_id,
                user_id=owner.id,
                name=spec.name,
                prefix=display_prefix(secret),
                key_hash=self._hasher.digest(secret),
                key_id=self._hasher.current_id,
                session_stamp=user.session_stamp,
                upstreams="\n".join(spec.upstreams) if spec.upstreams is not None else None,
                paths="\n".join(spec.paths) if spec.paths is not None else None,
                rate_limit=spec.rate_limit,
                models="\n".join(spec.models) if spec.models is not None else None,
                token_budget=json.dumps(spec.token_budget.as_dict()) if spec.token_budget else None,
                created_at=int(time.time()),
                expires_at=spec.expires_at,
                acts_for_users=acts_for_users,
            )
            db.add(row)
            log_api_key_change(db, owner.id, row.id)
        return CreatedKey(secret, row), dropped

    @staticmethod
    def _delete_named(db: Session, user_id: str, name: str) -> list[str]:
        ids = list(db.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id, ApiKey.name == name)))
        if ids:
            db.execute(delete(ApiKey).where(ApiKey.id.in_(ids)))
            for key_id in ids:
                log_api_key_change(db, user_id, key_id)
        return ids

    def revoke(self, actor: UserState, user_id: str, key_id: str) -> None:
        """Revoke one key of `user_id` (NotFoundError when it is not theirs)."""
        subject, detail = self._email_of(user_id), f"key={key_id}"
        with self._audit.attempt("api_key.revoked", actor=actor.email, subject=subject, detail=detail):
            self._delete(user_id, key_id)
        self._registry.api_key_changed(key_id, None)

    def _delete(self, user_id: str, key_id: str) -> None:
        with self._sessions() as db, db.begin():
            row = db.get(ApiKey, key_id)
            if row is None or row.user_id != user_id:
                raise NotFoundError("API key not found.")
            db.delete(row)
            log_api_key_change(db, user_id, key_id)

    def revoke_named(self, owner: UserState, name: str) -> int:
        """Revoke the owner's keys with this name; return how many there were."""
        with self._sessions() as db, db.begin():
            dropped = self._delete_named(db, owner.id, name)
        for key_id in dropped:
            self._registry.api_key_changed(key_id, None)
            self._audit.record(
                "api_key.revoked", "success", actor=owner.email, subject=owner.email, detail=f"key={key_id}"
            )
        return len(dropped)

    def _email_of(self, user_id: str) -> str:
        user = self._registry.view.users.get(user_id)
        return user.email if user else user_id

    # --- reading ------------------------------------------------------------------------------

    def list_keys(self, user_id: str) -> list[ApiKey]:
        """One account's keys, newest first (metadata only: the rows hold no secret)."""
        with self._sessions() as db:
            query = select(ApiKey).where(ApiKey.user_id == user_id)
            return list(db.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.id)))

    def count_by_secret(self) -> dict[str | None, int]:
        """How many keys are digested under each secret, by key id (None: stored before key ids were)."""
        with self._sessions() as db:
            rows = db.execute(select(ApiKey.key_id, func.count()).group_by(ApiKey.key_id)).all()
        return {kid: int(count) for kid, count in rows}

    def list_all(self, *, offset: int = 0, limit: int = 50) -> tuple[list[ApiKey], int]:
        """A page of every account's keys, newest first, and the total count."""
        with self._sessions() as db:
            total = db.scalar(select(func.count()).select_from(ApiKey)) or 0
            query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id).offset(offset).limit(limit)
            return list(db.scalars(query)), total

    # --- using (the hot path) -----------------------------------------------------------------

    def identify(self, presented: str, *, stale: bool = False) -> Admitted:
        """The live key behind `presented` and its owner, or AuthenticationError (401).

        Pure memory (a digest and a dict lookup) unless `stale`: then the database answers, and
        StoreUnavailableError when it cannot (fail closed). Run that case in a worker thread.
        """
        if not self.policy.enabled:
            raise AuthenticationError("API keys are disabled on this site.", code="api_keys_disabled")
        if not is_well_formed(presented):
            raise AuthenticationError(INVALID_KEY, code="malformed_api_key")
        digest, now = self._hasher.digest(presented), int(time.time())
        if stale:
            key, owner = self._check_in_database([digest, *self._other_digests(presented)], now)
        else:
            key, owner = self._find_in_view(presented, digest, now)
        if key.digest != digest or key.key_id != self._hasher.current_id:
            self.redigests.note(key, digest)
        return Admitted(key, owner)

    def _find_in_view(self, presented: str, digest: str, now: int) -> tuple[ApiKeyState, UserState]:
        """By the current secret's digest (one HMAC, one dict lookup), then by the fallbacks'."""
        view = self._registry.view
        key = view.api_keys.get(digest)
        if key is None:
            key = self._registry.find_api_key((digest, *self._other_digests(presented)))
        if key is None:
            raise AuthenticationError(INVALID_KEY, code="unknown_api_key")
        return key, check_api_key_owner(key, view.users.get(key.user_id), now)

    def _other_digests(self, presented: str) -> list[str]:
        return [digest for _kid, digest in self._hasher.fallback_digests(presented)]

    def flush_redigests(self) -> None:
        """Store the keys found under an earlier secret's digest under the current one (one of the
        batched writes; `wardgate.identity.redigests`)."""
        self.redigests.flush()

    @property
    def limits_in_memory(self) -> bool:
        """True when `authorize` never waits on I/O (one process: its rate limits are in memory)."""
        return self._limiter.in_memory

    def authorize(self, admitted: Admitted) -> None:
        """Owner allowed and key within its rate (403 / 429); notes the key as used (batched)."""
        self.owner_allowed(admitted.user)
        self._within_rate(admitted.key)
        self._registry.touch_api_key(admitted.key.id)

    def current(self, key: ApiKeyState, *, stale: bool) -> Admitted:
        """A key admitted earlier, as it stands now (long-lived connections re-check with this).

        From the view; from the database when `stale` (run that in a worker thread), refusing when
        it cannot answer. AuthenticationError when the key is gone, expired or its owner's sessions
        ended; then ask `owner_allowed`.
        """
        if not self.policy.enabled:
            raise AuthenticationError("API keys are disabled on this site.", code="api_keys_disabled")
        now = int(time.time())
        if stale:
            return Admitted(*self._check_in_database(key.id, now))
        # By id: a re-digest (key rotation) changes the digest of a key admitted earlier.
        found = self._registry.api_key_by_id(key.id)
        if found is None:
            raise AuthenticationError(INVALID_KEY, code="unknown_api_key")
        return Admitted(found, check_api_key_owner(found, self._registry.view.users.get(found.user_id), now))

    def owner_allowed(self, user: UserState) -> None:
        """403 unless the owner may use keys now (approved; an admin, or users may hold keys)."""
        require_approved(user)
        if user.role != Role.ADMIN and not self.policy.users_may_create:
            raise PermissionDeniedError(
                "API keys are not allowed for this account.", code="api_key_not_allowed"
            )

    def _within_rate(self, key: ApiKeyState) -> None:
        """`API_KEY_RATE_LIMIT` and the key's own `rate_limit`, both for the whole key; a service
        key's calls count under `API_KEY_RATE_LIMIT` per person instead (`within_person_rate`)."""
        limits = [] if key.acts_for_users else [(self.policy.rate, f"api-key:{key.id}")]
        if key.rate is not None:
            limits.append((Limit("api-key-own", key.rate), f"api-key-own:{key.id}"))
        for limit, bucket in limits:
            self._hit(limit, bucket, "Rate limit exceeded for this API key.")

    def within_person_rate(self, key: ApiKeyState, person: UserState) -> None:
        """A service key's call for `person`: `API_KEY_RATE_LIMIT` counts each person's calls on
        their own, so that one busy person does not use up the key for everyone else behind it."""
        detail = f"Rate limit exceeded for the calls of {person.email} through this service key."
        self._hit(self.policy.rate, f"api-key:{key.id}:{person.id}", detail)

    def _hit(self, limit: Limit, bucket: str, detail: str) -> None:
        try:
            self._limiter.hit(limit, bucket)
        except RateLimitedError as exc:
            raise RateLimitedError(
                f"{detail} Try again in {exc.retry_after} seconds.",
                retry_after=exc.retry_after,
                code="api_key_rate_limited",
            ) from None

    def _check_in_database(self, found_by: list[str] | str, now: int) -> tuple[ApiKeyState, UserState]:
        """The slow path when the view is stale: the key with one of these digests (or this id) from
        the database, refusing if it cannot answer."""
        where = ApiKey.key_hash.in_(found_by) if isinstance(found_by, list) else ApiKey.id == found_by
        try:
            with self._sessions() as db:
                row = db.scalar(select(ApiKey).where(where))
                owner = db.get(User, row.user_id) if row is not None else None
                state = (
                    UserState.from_row(owner, load_groups(db, [owner.id]).get(owner.id, ()))
                    if owner
                    else None
                )
        except SQLAlchemyError as exc:
            raise StoreUnavailableError("database unavailable for the API key check") from exc
        if row is None:
            raise AuthenticationError(INVALID_KEY, code="unknown_api_key")
        key = ApiKeyState.from_row(row)
        return key, check_api_key_owner(key, state, now)

    def record_refusal(self, code: str, key: ApiKeyState | None = None, *, person: str | None = None) -> None:
        """Audit a refused key (`api_key.refused`), at most once a minute per key (or IP) and reason;
        `person`: the address a service key's refused call named (checked, exact form)."""
        who = key.id if key is not None else f"ip:{self._refusals.client_key(request_origin.get()[0])}"
        try:
            self._refusals.hit(_REFUSAL_AUDIT, f"{who}:{code}")
        except RateLimitedError:
            return
        owner = self._email_of(key.user_id) if key is not None else None
        detail = f"key={key.id} reason={code}" if key is not None else f"reason={code}"
        if person is not None:
            detail += f" person={person}"
        self._audit.record("api_key.refused", "refused", subject=owner, detail=detail)
