"""API keys across a rotation of the site's secret: made under the old secret, found under the
fallback, re-digested under the new one (on every instance), still working once the fallback is
dropped, and nothing left behind that a revoked key could use."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from wardgate.audit.log import AuditLog
from wardgate.config import load_settings
from wardgate.errors import AuthenticationError
from wardgate.gateway import account_policy, api_key_policy
from wardgate.identity.accounts import AccountService
from wardgate.identity.api_keys import ApiKeyService
from wardgate.identity.key_material import ApiKeyHasher, NewKey, generate_key
from wardgate.security.keys import SecretRing, key_id
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import RateLimiter
from wardgate.security.tokens import TokenCodec
from wardgate.sessions.records import ApiKeyState, KeyScope, UserState
from wardgate.sessions.registry import SessionRegistry
from wardgate.sessions.view import SessionView
from wardgate.storage import db, schema
from wardgate.storage.models import ApiKey

OLD, NEW = "old-secret-" * 5, "new-secret-" * 5
SETTINGS = load_settings(
    {"WEBUI_SECRET_KEY": OLD, "ENABLE_API_KEYS": "true", "USER_PERMISSIONS_FEATURES_API_KEYS": "true"},
    env_file=None,
)
HASHER = PasswordHasher()


def key_state(key_id: str, digest: str) -> ApiKeyState:
    """A key as the view holds it."""
    return ApiKeyState(key_id, "u", digest, "sk-0", "s", None, KeyScope(), None)


class Instance:
    """One wardgate process's account and key services, with its own secrets, over a shared database."""

    def __init__(self, engine: Engine, ring: SecretRing) -> None:
        self.sessions = db.session_factory(engine)
        self.registry = SessionRegistry(self.sessions, stale_after=30, publish=lambda: None)
        audit = AuditLog(self.sessions)
        codec = TokenCodec(ring.secrets, timedelta(hours=1))
        self.accounts = AccountService(
            self.sessions, self.registry, HASHER, codec, account_policy(SETTINGS), RateLimiter(), audit
        )
        self.keys = ApiKeyService(
            self.sessions, self.registry, ApiKeyHasher(ring), api_key_policy(SETTINGS), audit
        )
        self.registry.load()

    def use(self, key: str, *, stale: bool = False) -> UserState:
        return self.keys.identify(key, stale=stale).user

    def row(self, key_id: str) -> ApiKey:
        with self.sessions() as s:
            row = s.get(ApiKey, key_id)
            assert row is not None
            return row


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.create_db_engine(database_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def made_before(engine: Engine) -> tuple[Instance, UserState, str, str]:
    """An instance on the old secret alone, an admin and a key they made: (instance, admin, key, id)."""
    before = Instance(engine, SecretRing.of(OLD))
    admin = before.accounts.create_user("Ada", "ada@example.com", "correct-horse-battery", role=None)
    created = before.keys.create(admin, NewKey(name="ci"))
    assert created.row.key_id == key_id(OLD)
    return before, admin, created.key, created.row.id


def test_a_key_made_before_the_rotation_survives_it(engine: Engine) -> None:
    before, admin, key, kid = made_before(engine)
    old_digest = before.row(kid).key_hash
    rotated = Instance(engine, SecretRing.of(NEW, [OLD]))
    assert rotated.use(key).id == admin.id  # found under the fallback's digest
    assert before.row(kid).key_hash == old_digest  # queued, not written on the request's path
    rotated.keys.flush_redigests()
    row = rotated.row(kid)
    assert row.key_hash == ApiKeyHasher(NEW).digest(key) != old_digest and row.key_id == key_id(NEW)
    assert rotated.use(key).id == admin.id
    dropped = Instance(engine, SecretRing.of(NEW))  # the fallback removed
    assert dropped.use(key).id == admin.id
    assert dropped.use(key, stale=True).id == admin.id


def test_other_instances_follow_a_re_digest(engine: Engine) -> None:
    before, admin, key, kid = made_before(engine)
    a, b = Instance(engine, SecretRing.of(NEW, [OLD])), Instance(engine, SecretRing.of(NEW, [OLD]))
    a.use(key)
    a.keys.flush_redigests()
    b.registry.sync()  # the change-log entry the re-digest wrote
    assert b.registry.view.api_key_ids[kid] == ApiKeyHasher(NEW).digest(key)
    assert ApiKeyHasher(OLD).digest(key) not in b.registry.view.api_keys
    assert b.use(key).id == admin.id
    before.registry.sync()  # an instance still on the old secret alone no longer finds it: why pass 1
    with pytest.raises(AuthenticationError):
        before.use(key)


def test_revoking_a_re_digested_key_leaves_no_old_digest(engine: Engine) -> None:
    """The bug this fixed: `put_api_key` kept the old digest's entry when a key's digest changed, so
    that after a re-digest and a revocation the old digest still admitted the key from memory."""
    _before, admin, key, kid = made_before(engine)
    a, b = Instance(engine, SecretRing.of(NEW, [OLD])), Instance(engine, SecretRing.of(NEW, [OLD]))
    a.use(key)
    b.use(key)  # b's view holds the old digest
    a.keys.flush_redigests()
    b.registry.sync()
    a.keys.revoke(admin, admin.id, kid)
    b.registry.sync()
    for instance in (a, b):
        assert kid not in instance.registry.view.api_key_ids
        assert instance.registry.view.api_keys == {}
        with pytest.raises(AuthenticationError):
            instance.use(key)
    b.keys.flush_redigests()  # b had queued a re-digest of the now-revoked key: it writes nothing
    with b.sessions() as s:
        assert s.scalars(select(ApiKey)).all() == []


def test_a_revocation_between_a_re_digest_and_its_view_update_wins(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The re-digest commits, then (before its thread puts the moved key into the view) the key is
    revoked and the view synced: the late put must not bring the revoked key back."""
    _before, admin, key, kid = made_before(engine)
    rotated = Instance(engine, SecretRing.of(NEW, [OLD]))
    rotated.use(key)
    registry = rotated.registry
    late_put = registry.api_key_redigested

    def revoked_meanwhile(moved: ApiKeyState, old_digest: str) -> None:
        rotated.keys.revoke(admin, admin.id, kid)
        registry.sync()
        late_put(moved, old_digest)

    monkeypatch.setattr(registry, "api_key_redigested", revoked_meanwhile)
    rotated.keys.flush_redigests()
    registry.sync()
    with pytest.raises(AuthenticationError):
        rotated.use(key)


class _PausingDigests(dict[str, ApiKeyState]):
    """The view's digest table with the worst thread switch forced: the first lookup of `fallback`
    starts `move` (in a thread) and lets it run up to just after it removed the key's old entry, then
    looks; the move finishes 0.2 s later."""

    def __init__(self, entries: dict[str, ApiKeyState], fallback: str, move: threading.Thread) -> None:
        super().__init__(entries)
        self.fallback, self.move = fallback, move
        self.removed, self.resume = threading.Event(), threading.Event()

    def get(self, digest: str, default: ApiKeyState | None = None) -> ApiKeyState | None:  # type: ignore[override]
        if digest == self.fallback and not self.move.is_alive() and not self.resume.is_set():
            self.move.start()
            assert self.removed.wait(5)
            found = super().get(digest, default)
            threading.Timer(0.2, self.resume.set).start()
            return found
        return super().get(digest, default)

    def pop(self, digest: str, default: ApiKeyState | None = None) -> ApiKeyState | None:  # type: ignore[override]
        popped = super().pop(digest, default)
        if self.move.is_alive():
            self.removed.set()
            assert self.resume.wait(5)
        return popped


def test_a_key_moving_between_digests_during_a_lookup_is_found(engine: Engine) -> None:
    """Mid-rotation, instances on either secret move a key between its two digests. A lookup that
    missed the new digest just before the move and the old one just after it must look again, not
    refuse a valid key (a 401 seen once in 13,000 calls of the rolling-rotation test)."""
    _before, admin, key, kid = made_before(engine)
    instance = Instance(engine, SecretRing.of(OLD, [NEW]))  # looks under OLD first, then NEW
    registry = instance.registry
    under_old = registry.view.api_key_by_id(kid)
    assert under_old is not None
    new_digest = ApiKeyHasher(NEW).digest(key)
    registry.api_key_changed(kid, replace(under_old, digest=new_digest))  # moved to NEW elsewhere...
    move = threading.Thread(target=registry.api_key_changed, args=(kid, under_old))  # ...and back
    registry.view.api_keys = _PausingDigests(registry.view.api_keys, new_digest, move)
    assert instance.use(key).id == admin.id
    move.join(5)
    assert registry.view.api_key_ids == {kid: under_old.digest}


def test_an_unknown_key_never_waits_for_a_change_under_way(engine: Engine) -> None:
    """Misses are answered without the registry's lock: a flood of made-up keys must not queue
    behind a long change of the view (a prune of a large view, a sync's backlog) on the event loop."""
    instance = Instance(engine, SecretRing.of(OLD, [NEW]))
    refused = threading.Event()

    def use_unknown() -> None:
        with pytest.raises(AuthenticationError):
            instance.use(generate_key())
        refused.set()

    with instance.registry._lock:  # a change of the view under way, for as long as this block
        caller = threading.Thread(target=use_unknown, daemon=True)
        caller.start()
        assert refused.wait(2), "the lookup waited for the lock"
    caller.join(2)


def test_the_view_replaces_a_digest_it_holds() -> None:
    view = SessionView()
    view.put_api_key(key_state("k1", "old"))
    view.put_api_key(key_state("k1", "new"))
    assert set(view.api_keys) == {"new"} and view.api_key_ids == {"k1": "new"}
    view.drop_api_key("k1")
    assert view.api_keys == {} and view.api_key_ids == {}


def test_a_key_under_the_current_secret_costs_one_digest(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common case after a rotation: one HMAC, whatever the number of fallbacks."""
    ring = SecretRing.of(NEW, [f"fallback-{n}-" * 5 for n in range(8)])
    instance = Instance(engine, ring)
    admin = instance.accounts.create_user("Ada", "ada@example.com", "correct-horse-battery", role=None)
    key = instance.keys.create(admin, NewKey()).key
    calls: list[str] = []
    real = ApiKeyHasher.fallback_digests

    def counting(self: ApiKeyHasher, presented: str) -> Iterator[tuple[str, str]]:
        calls.append(presented)
        return real(self, presented)

    monkeypatch.setattr(ApiKeyHasher, "fallback_digests", counting)
    for _ in range(5):
        assert instance.use(key).id == admin.id
    assert calls == []
    assert len(instance.keys.redigests) == 0  # nothing to write either
    with pytest.raises(AuthenticationError):
        instance.use("sk-" + "0" * 64)  # an unknown key is looked up under each secret
    assert len(calls) == 1


def test_a_key_from_before_key_ids_is_recorded_under_the_current_secret(engine: Engine) -> None:
    before, admin, key, kid = made_before(engine)
    with before.sessions() as s, s.begin():
        s.get(ApiKey, kid).key_id = None  # type: ignore[union-attr]  # as migration 0013 leaves it
    same = Instance(engine, SecretRing.of(OLD))
    assert same.use(key).id == admin.id
    same.keys.flush_redigests()
    assert same.row(kid).key_id == key_id(OLD)
    assert same.keys.count_by_secret() == {key_id(OLD): 1}
