"""Authentication: a presented credential in, the caller behind it out — the hot path of every request.

Two kinds of caller (`Caller`):

- `Principal`: a person's session, a JWT from `Authorization: Bearer` or the `token` cookie.
- `KeyPrincipal`: a program's API key (`sk-...`), from `Authorization: Bearer` or the header named by
  `CUSTOM_API_KEY_HEADER`. Both carriers lead to the same check, so no restriction can be skipped by
  choosing the other header (Open WebUI's CVE-2026-45339). Keys are refused (403) where
  `keys_allowed` is false: wardgate's own account and admin API, so that a stolen key can neither
  make more keys nor hide its own revocation.

A session is checked against the in-memory revocation view: pure CPU. Only when the view is stale
(or older than the token) does the database decide, in a worker thread, refusing when it cannot
answer (fail closed). An API key is looked up in the same view; a key the view does not hold may
have been made on another instance a moment ago, before this one heard of it, so the database
confirms such a miss. A flood of made-up keys must not cost others: an address already over its
failure limit gets its 429 without a look-up, at most `KEY_CONFIRMATIONS` run at a time (worker
threads and database connections stay free), and with `KEY_CONFIRMATIONS_WAITING` more waiting the
answer is 503 (busy: a retry, not a counted failure). Failures count against the client's address
(`AUTH_FAILURE_RATE_LIMIT`); successes touch no store at all. The HTTP layer only reads the
credential from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import anyio.to_thread

from wardgate.errors import ApiError, AuthenticationError, PermissionDeniedError, StoreUnavailableError
from wardgate.identity.api_keys import Admitted, ApiKeyService
from wardgate.identity.key_material import KEY_PREFIX, is_well_formed
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.security.tokens import Claims, TokenCodec
from wardgate.sessions.records import ApiKeyState, KeyScope, UserState
from wardgate.sessions.registry import SessionRegistry

TOKEN_COOKIE = "token"  # noqa: S105 - the session cookie's name (Open WebUI's)
KEYS_NOT_HERE = "API keys cannot be used for wardgate's own account and admin API; sign in instead."
NOT_AUTHENTICATED = "Not authenticated."
Via = Literal["header", "cookie", "api-key-header"]
# Refusals of credentials nobody was given: a bad signature or shape, a key that does not exist.
COUNTED_FAILURES = frozenset({"invalid_token", "malformed_api_key", "unknown_api_key"})
KEY_CONFIRMATIONS = 4  # database look-ups of keys the view does not hold, at once per process
KEY_CONFIRMATIONS_WAITING = 32  # more waiting than this: 503 for a miss, without a look-up


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented, and how it travelled."""

    value: str
    via: Via


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: the live user, the verified claims, and how the token travelled."""

    user: UserState
    claims: Claims
    token: str
    via: Literal["header", "cookie"]

    def may_reach(self, upstream: str, path: str) -> bool:
        """Sessions are not scoped (the upstream's role and group rules still apply)."""
        return True


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """A program holding an API key: the key's owner, the key's facts and how the key travelled."""

    user: UserState
    key: ApiKeyState
    via: Literal["header", "api-key-header"]
    endpoints: KeyScope  # API_KEYS_ALLOWED_ENDPOINTS

    def may_reach(self, upstream: str, path: str) -> bool:
        """The key's own scope and the site-wide endpoint list must both allow `path` on `upstream`."""
        return self.key.scope.allows(upstream, path) and self.endpoints.allows(upstream, path)


Caller = Principal | KeyPrincipal


class Authenticator:
    """Turns a credential into a caller: sessions through the revocation view, keys through their service."""

    def __init__(
        self,
        codec: TokenCodec,
        registry: SessionRegistry,
        api_keys: ApiKeyService,
        limiter: RateLimiter,
        failures: Limit,
    ) -> None:
        self._codec = codec
        self._registry = registry
        self._api_keys = api_keys
        self._limiter = limiter
        self._failures = failures
        self._confirmations = anyio.CapacityLimiter(KEY_CONFIRMATIONS)
        self._confirming = 0  # look-ups running or waiting (the event loop's count: no lock)

    async def authenticate(
        self, credential: Credential | None, *, ip: str | None, keys_allowed: bool
    ) -> Caller:
        """The live caller behind `credential`, or ApiError (401, 403, 429; 503 when no store can tell)."""
        if credential is None:
            raise AuthenticationError(NOT_AUTHENTICATED)
        value, via = credential.value, credential.via
        try:
            if via == "api-key-header" or (via == "header" and value.startswith(KEY_PREFIX)):
                key_via: Literal["header", "api-key-header"] = (
                    "header" if via == "header" else "api-key-header"
                )
                return await self._key(value, key_via, ip, keys_allowed=keys_allowed)
            return await self._session(value, "cookie" if via == "cookie" else "header", ip)
        except AuthenticationError as exc:
            # Only forged or malformed credentials count: an authentic token that expired or was
            # signed out is not an attack, and an office behind one address must not be locked out
            # by it. Only failures touch the limiter (it may be Redis): valid requests stay I/O-free.
            if exc.code in COUNTED_FAILURES:
                await anyio.to_thread.run_sync(self._limiter.hit, self._failures, self._failure_bucket(ip))
            raise

    async def _session(self, token: str, via: Literal["header", "cookie"], ip: str | None) -> Principal:
        claims = self._codec.verify(token)
        registry = self._registry
        user = None if registry.is_stale else registry.check(claims)
        if user is None:  # the view is stale, or older than this token: the database decides
            user = await anyio.to_thread.run_sync(registry.check_in_database, claims)
        registry.touch(claims.session_id, claims.user_id, ip)
        return Principal(user=user, claims=claims, token=token, via=via)

    def _failure_bucket(self, ip: str | None) -> str:
        return f"auth-failure:{self._limiter.client_key(ip)}"

    async def _key(
        self, key: str, via: Literal["header", "api-key-header"], ip: str | None, *, keys_allowed: bool
    ) -> KeyPrincipal:
        """The one check of an API key, whichever header carried it."""
        service = self._api_keys
        try:
            admitted = await self._admitted(service.identify, key, ip)
        except AuthenticationError as exc:
            await anyio.to_thread.run_sync(service.record_refusal, exc.code)
            raise
        try:
            if not keys_allowed:
                raise PermissionDeniedError(KEYS_NOT_HERE, code="api_key_not_allowed_here")
            if service.limits_in_memory:
                service.authorize(admitted)
            else:  # its rate limits wait on the workers' shared file: not on the event loop
                await anyio.to_thread.run_sync(service.authorize, admitted)
        except ApiError as exc:
            await anyio.to_thread.run_sync(service.record_refusal, exc.code, admitted.key)
            raise
        return KeyPrincipal(admitted.user, admitted.key, via, service.policy.endpoints)

    async def _admitted(
        self, find: Callable[..., Admitted], what: object, ip: str | None, *, counted: bool = True
    ) -> Admitted:
        """`find(what, stale=...)`, a presented key's `identify` or an admitted key's `current`: from
        the view; from the database (in a worker thread) while the view is stale, or when the view
        just does not hold the key. A key made on another instance reaches this view with the next
        sync (milliseconds with Redis, up to `SESSION_SYNC_INTERVAL` without): it must not be refused
        meanwhile. `counted`: the client's failure limit applies (not to a key admitted before, a
        WebSocket's, whose client is not asking again)."""
        if self._registry.is_stale:
            return await anyio.to_thread.run_sync(partial(find, what, stale=True))
        try:
            return find(what, stale=False)
        except AuthenticationError as miss:
            if miss.code != "unknown_api_key":
                raise
        return await self._confirm(
            partial(find, what, stale=True), self._failure_bucket(ip) if counted else None
        )

    async def _confirm(self, in_database: Callable[[], Admitted], failures: str | None) -> Admitted:
        """The database's answer for a key the view does not hold, bounded as the module says."""
        if self._confirming >= KEY_CONFIRMATIONS + KEY_CONFIRMATIONS_WAITING:
            # Busy, not a verdict: a valid key made elsewhere gets a retry, not a counted failure.
            raise StoreUnavailableError("too many API keys waiting for the database")
        self._confirming += 1
        try:
            if failures is not None:
                if self._limiter.in_memory:
                    self._limiter.check(self._failures, failures)
                else:  # Redis or the workers' file: in the look-up's thread, under the same bound
                    in_database = partial(self._within_failures, failures, in_database)
            return await anyio.to_thread.run_sync(in_database, limiter=self._confirmations)
        finally:
            self._confirming -= 1

    def _within_failures(self, failures: str, in_database: Callable[[], Admitted]) -> Admitted:
        """`in_database`, unless the client is already over its failure limit (RateLimitedError)."""
        self._limiter.check(self._failures, failures)
        return in_database()

    async def refresh(self, caller: Caller) -> Caller:
        """The caller as things stand now, for connections that outlive a request (WebSockets).

        The token is verified again (it may have expired), the session or key checked against the
        view — against the database while the view is stale, refused when it cannot answer (fail
        closed) — and the user's current role and groups returned, for the admission rules to be
        applied again. ApiError (or StoreUnavailableError) when it may no longer be served.
        """
        if isinstance(caller, KeyPrincipal):
            admitted = await self._admitted(self._api_keys.current, caller.key, None, counted=False)
            self._api_keys.owner_allowed(admitted.user)
            return replace(caller, user=admitted.user, key=admitted.key)
        claims = self._codec.verify(caller.token)
        user = None if self._registry.is_stale else self._registry.check(claims)
        if user is None:
            user = await anyio.to_thread.run_sync(self._registry.check_in_database, claims)
        return replace(caller, user=user, claims=claims)

    def is_ours(self, authorization: str) -> bool:
        """Whether an `Authorization` value is wardgate's own (a session token or an API key).

        Such a value is never forwarded to an upstream, whatever became of it: a key has the shape
        of wardgate's (revoked, expired, made on an instance this one has not heard from yet, or
        made up: none of them the app's business), a token is signed by a key of the ring (expired
        or not, or from a clock ahead of this one), in whichever part of the value it stands. Pure
        memory: no look-up, no I/O.
        """
        return any(
            is_well_formed(part) if part.startswith(KEY_PREFIX) else self._codec.signed_here(part)
            for part in authorization.split()  # any scheme, any spacing, or none
        )
