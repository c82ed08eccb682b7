"""API keys below HTTP: format, digest, scopes, and the service over SQLite and a real PostgreSQL.

Two services on one database stand for two wardgate instances (as in test_sessions.py): a key
created, revoked or ended on one is seen by the other after a sync, and a stale view asks the
database (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, select

from wardgate.audit.log import AuditLog
from wardgate.config import load_settings
from wardgate.config.values import is_plain_path, parse_rate
from wardgate.config.values import path_prefixes as check_path_prefixes
from wardgate.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    StoreUnavailableError,
)
from wardgate.gateway import account_policy, api_key_policy
from wardgate.identity.accounts import AccountService
from wardgate.identity.api_keys import ApiKeyService
from wardgate.identity.key_material import KEY_PATTERN, ApiKeyHasher, NewKey, check_upstreams, generate_key
from wardgate.identity.records import UserChanges
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.security.tokens import TokenCodec
from wardgate.sessions.records import KeyScope, UserState, path_within
from wardgate.sessions.registry import SessionRegistry
from wardgate.storage import db, schema
from wardgate.storage.models import ApiKey, AuthChange

SITE_SECRET = "k" * 48
PASSWORD = "correct-horse-battery"
HASHER = PasswordHasher()
# The defaults, keys on for everyone: the policies as the composition root makes them.
SETTINGS = load_settings(
    {
        "WEBUI_SECRET_KEY": SITE_SECRET,
        "ENABLE_API_KEYS": "true",
        "USER_PERMISSIONS_FEATURES_API_KEYS": "true",
    },
    env_file=None,
)


# --- format, digest and scopes (pure) ---------------------------------------------------------------


def test_keys_are_sk_and_64_hex_digits_and_never_repeat() -> None:
    keys = {generate_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(KEY_PATTERN.fullmatch(k) and len(k) == 67 for k in keys)


def test_the_digest_is_an_hmac_under_a_key_derived_for_api_keys_only() -> None:
    key = generate_key()
    derived = HKDF(hashes.SHA256(), 32, None, b"wardgate/api-key-digest/v1").derive(SITE_SECRET.encode())
    expected = hmac.new(derived, key.encode(), hashlib.sha256).hexdigest()
    assert ApiKeyHasher(SITE_SECRET).digest(key) == expected
    assert expected != hashlib.sha256(key.encode()).hexdigest()
    assert expected != hmac.new(SITE_SECRET.encode(), key.encode(), hashlib.sha256).hexdigest()
    assert ApiKeyHasher("another-secret-" * 4).digest(key) != expected  # rotating the secret ends keys


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/ollama/api", True),
        ("/ollama/api/", True),
        ("/ollama/api/chat", True),
        ("/ollama/api/chat/x", True),
        ("/ollama/apix", False),
        ("/ollama/ap", False),
        ("/ollama", False),
        ("/openai/v1/chat", False),
        ("/", False),
    ],
)
def test_path_prefixes_match_on_a_segment_boundary(path: str, allowed: bool) -> None:
    assert path_within(path, ["/ollama/api"]) is allowed


@pytest.mark.parametrize(
    ("path", "plain"),
    [
        ("/ollama/api/chat", True),
        ("/ollama/api/../pull", False),
        ("/ollama/api/./chat", False),
        ("/ollama/api/..", False),
        ("/ollama//api", False),
        ("/ollama/api%2F..%2Fpull", False),
        ("/ollama\\api", False),
        ("/ollama/api\nchat", False),
        ("ollama/api", False),
    ],
)
def test_ambiguous_paths_are_not_plain(path: str, plain: bool) -> None:
    assert is_plain_path(path) is plain


@pytest.mark.parametrize(
    ("scope", "upstream", "path", "allowed"),
    [
        (KeyScope(), "ollama", "/ollama/api/../x", True),  # unrestricted: the upstream decides
        (KeyScope(upstreams=frozenset({"openai"})), "openai", "/openai/v1/chat", True),
        (KeyScope(upstreams=frozenset({"openai"})), "ollama", "/ollama/api/chat", False),
        (KeyScope(paths=("/ollama/api",)), "ollama", "/ollama/api/chat", True),
        (KeyScope(paths=("/ollama/api",)), "ollama", "/ollama/apix", False),
        (KeyScope(paths=("/ollama/api",)), "ollama", "/ollama/api/../pull", False),
        (KeyScope(frozenset({"ollama"}), ("/openai",)), "ollama", "/ollama/api", False),  # both must pass
        (KeyScope(paths=()), "app", "/", False),  # an empty list allows nothing
        (KeyScope(paths=("/",)), "app", "/anything/at/all", True),
    ],
)
def test_scopes_narrow_never_widen(scope: KeyScope, upstream: str, path: str, allowed: bool) -> None:
    assert scope.allows(upstream, path) is allowed


def test_scope_lists_are_validated() -> None:
    assert check_path_prefixes([" /ollama/api ", "/ollama/api", "/openai"]) == ("/ollama/api", "/openai")
    assert check_upstreams(["ollama", "app", "ollama"]) == ("ollama", "app")
    for bad in (["ollama"], ["/a/../b"], ["/a b"], ["/a?x=1"], ["/a#f"], ["/" + "a" * 300]):
        with pytest.raises(ValueError, match="is not a path prefix"):
            check_path_prefixes(bad)
    with pytest.raises(ValueError, match="unknown upstream 'redis'; expected ollama, openai, app"):
        check_upstreams(["redis"])


# --- settings ----------------------------------------------------------------------------------------


def test_settings_defaults_and_open_webui_names(tmp_path: Path) -> None:
    base = {"WEBUI_SECRET_KEY": SITE_SECRET, "DATA_DIR": str(tmp_path)}
    s = load_settings(base, env_file=None)
    assert (s.enable_api_keys, s.user_permissions_features_api_keys) == (False, False)
    assert (s.custom_api_key_header, str(s.api_key_rate_limit), s.api_key_endpoints) == (
        "x-api-key",
        "600/1m",
        None,
    )
    s = load_settings(
        {
            **base,
            "ENABLE_API_KEYS": "True",
            "USER_PERMISSIONS_FEATURES_API_KEYS": "true",
            "CUSTOM_API_KEY_HEADER": "X-Gateway-Key",
            "API_KEY_ALLOWED_ENDPOINTS": " /ollama/api , /openai/v1,",  # Open WebUI's older name
        },
        env_file=None,
    )
    assert (s.enable_api_keys, s.user_permissions_features_api_keys) == (True, True)
    assert s.custom_api_key_header == "x-gateway-key"
    assert s.api_key_endpoints == ("/ollama/api", "/openai/v1")
    on = load_settings({**base, "ENABLE_API_KEY_ENDPOINT_RESTRICTIONS": "true"}, env_file=None)
    assert on.api_key_endpoints == ()  # restrictions on and nothing listed: keys reach nothing


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("CUSTOM_API_KEY_HEADER", "Content-Type", "not a standard header"),  # CORS-safelisted
        ("CUSTOM_API_KEY_HEADER", "cookie", "not a standard header"),
        ("CUSTOM_API_KEY_HEADER", "x-forwarded-email", "not a standard header"),
        ("CUSTOM_API_KEY_HEADER", "x api key", "not a standard header"),
        ("API_KEYS_ALLOWED_ENDPOINTS", "/ollama,ollama", "'ollama' is not a path prefix"),
        ("API_KEYS_ALLOWED_ENDPOINTS", "/ollama/../admin", "is not a path prefix"),
        ("API_KEY_RATE_LIMIT", "many", "expected <count>/<period>"),
        ("ENABLE_API_KEYS", "yes", "expected true or false"),
    ],
)
def test_invalid_settings_stop_start_up(tmp_path: Path, name: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"WEBUI_SECRET_KEY": SITE_SECRET, "DATA_DIR": str(tmp_path), name: value}, env_file=None
        )
    (message,) = caught.value.problems
    assert message.startswith(f"{name}=") and problem in message


# --- the service, as two instances over one database -------------------------------------------------


class Instance:
    """One wardgate process's account and key services over a shared database."""

    def __init__(self, engine: Engine, **policy: object) -> None:
        self.sessions = db.session_factory(engine)
        self.registry = SessionRegistry(self.sessions, stale_after=30, publish=lambda: None)
        audit = AuditLog(self.sessions)
        codec = TokenCodec([SITE_SECRET], timedelta(hours=1))
        limiter = RateLimiter()
        self.accounts = AccountService(
            self.sessions, self.registry, HASHER, codec, account_policy(SETTINGS), limiter, audit
        )
        key_policy = replace(api_key_policy(SETTINGS), **policy)  # type: ignore[arg-type]
        self.keys = ApiKeyService(self.sessions, self.registry, ApiKeyHasher(SITE_SECRET), key_policy, audit)
        self.registry.load()

    def use(self, key: str) -> UserState:
        admitted = self.keys.identify(key)
        self.keys.authorize(admitted)
        return admitted.user

    def row(self, key_id: str) -> ApiKey | None:
        with self.sessions() as s:
            return s.get(ApiKey, key_id)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.create_db_engine(database_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def people(a: Instance) -> tuple[UserState, UserState]:
    admin = a.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
    user = a.accounts.create_user("Bob", "bob@example.com", PASSWORD, role="user")
    return admin, user


def test_only_a_digest_is_stored(engine: Engine) -> None:
    a = Instance(engine)
    admin, _ = people(a)
    created = a.keys.create(admin, NewKey(name="ci"))
    row = a.row(created.row.id)
    assert row is not None
    assert row.key_hash == ApiKeyHasher(SITE_SECRET).digest(created.key)
    assert row.prefix == created.key[:11]
    stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert not any(created.key[11:] in value for value in stored)
    assert a.use(created.key).id == admin.id


def test_a_new_key_reaches_the_other_instance_after_a_sync(engine: Engine) -> None:
    """The view alone; the HTTP path confirms such a miss in the database (test_authentication.py)."""
    a, b = Instance(engine), Instance(engine)
    admin, _ = people(a)
    key = a.keys.create(admin, NewKey()).key
    with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
        b.use(key)
    b.registry.sync()
    assert b.use(key).email == "ada@example.com"


def test_a_key_revoked_on_one_instance_is_refused_on_the_other_after_a_sync(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    admin, _ = people(a)
    created = a.keys.create(admin, NewKey())
    b.registry.sync()
    assert b.use(created.key).id == admin.id
    a.keys.revoke(admin, admin.id, created.row.id)
    with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
        a.use(created.key)  # the local write applies at once
    assert b.use(created.key).id == admin.id  # b has not synchronised yet ...
    b.registry.sync()
    with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
        b.use(created.key)  # ... and refuses once it has
    assert a.row(created.row.id) is None


@pytest.mark.parametrize("event", ["sign-out-everywhere", "password-change", "disable", "delete"])
def test_keys_end_with_the_owners_sessions_on_every_instance(engine: Engine, event: str) -> None:
    a, b = Instance(engine), Instance(engine)
    admin, user = people(a)
    created = a.keys.create(user, NewKey())
    b.registry.sync()
    assert b.use(created.key).id == user.id
    if event == "sign-out-everywhere":
        a.accounts.revoke_all_sessions(user.id)
    elif event == "password-change":
        a.accounts.change_password(user.id, PASSWORD, "another-long-password")
    elif event == "disable":
        a.accounts.update_user(admin, user.id, UserChanges(active=False))
    else:
        a.accounts.delete_user(admin, user.id)
    b.registry.sync()  # only the user's change is logged: the stamp check refuses the key
    for instance in (a, b):
        with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
            instance.use(created.key)
    assert a.row(created.row.id) is None  # and the row is gone
    if event == "disable":
        a.accounts.update_user(admin, user.id, UserChanges(active=True))
        with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
            a.use(created.key)  # enabling again does not bring keys back


@pytest.mark.slow
def test_expired_keys_are_refused_as_expired(engine: Engine) -> None:
    a = Instance(engine)
    admin, user = people(a)
    expiry = int(time.time()) + 2  # whole seconds: 1 could already be past when a slow machine uses it
    created = a.keys.create(admin, NewKey(expires_at=expiry))
    ended = a.keys.create(user, NewKey())
    assert a.use(created.key).id == admin.id
    time.sleep(max(0.0, expiry + 0.1 - time.time()))
    a.accounts.revoke_all_sessions(user.id)
    a.registry.prune_view(int(time.time()), threading.Event())  # ended keys go, expired ones stay
    assert ended.row.key_hash not in a.registry.view.api_keys
    for stale in (False, True):
        with pytest.raises(AuthenticationError, match=r"^This API key has expired\.$"):
            a.keys.identify(created.key, stale=stale)


def test_owner_must_be_approved_and_allowed(engine: Engine) -> None:
    a = Instance(engine)
    admin, user = people(a)
    user_key = a.keys.create(user, NewKey()).key
    admin_key = a.keys.create(admin, NewKey()).key
    a.accounts.update_user(admin, user.id, UserChanges(role="pending"))
    with pytest.raises(PermissionDeniedError, match="pending approval"):
        a.use(user_key)
    a.accounts.update_user(admin, user.id, UserChanges(role="user"))
    assert a.use(user_key).id == user.id
    strict = Instance(engine, users_may_create=False)  # the permission taken away, e.g. at a restart
    with pytest.raises(PermissionDeniedError, match=r"^API keys are not allowed for this account\.$"):
        strict.use(user_key)
    assert strict.use(admin_key).id == admin.id
    with pytest.raises(PermissionDeniedError, match=r"^You do not have permission to create API keys\.$"):
        strict.keys.create(user, NewKey())
    off = Instance(engine, enabled=False)
    with pytest.raises(AuthenticationError, match=r"^API keys are disabled on this site\.$"):
        off.use(admin_key)
    with pytest.raises(PermissionDeniedError, match=r"^API keys are disabled on this site\.$"):
        off.keys.create(admin, NewKey())


def test_a_stale_view_asks_the_database(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    admin, _ = people(a)
    kept, revoked = a.keys.create(admin, NewKey(name="kept")), a.keys.create(admin, NewKey(name="gone"))
    a.keys.revoke(admin, admin.id, revoked.row.id)
    assert b.keys.identify(kept.key, stale=True).user.id == admin.id  # b never synced: the database
    with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
        b.keys.identify(revoked.key, stale=True)


def test_a_stale_view_with_the_database_down_fails_closed(engine: Engine) -> None:
    a = Instance(engine)
    admin, _ = people(a)
    key = a.keys.create(admin, NewKey()).key
    broken = db.create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    offline = ApiKeyService(
        db.session_factory(broken),
        a.registry,
        ApiKeyHasher(SITE_SECRET),
        api_key_policy(SETTINGS),
        AuditLog(a.sessions),
    )
    with pytest.raises(StoreUnavailableError):
        offline.identify(key, stale=True)
    broken.dispose()


def test_last_used_is_written_in_batches_not_per_request(engine: Engine) -> None:
    a = Instance(engine)
    admin, _ = people(a)
    created = a.keys.create(admin, NewKey())
    for _ in range(5):
        a.use(created.key)
    row = a.row(created.row.id)
    assert row is not None and row.last_used_at is None
    a.registry.flush_touches()
    row = a.row(created.row.id)
    assert row is not None and row.last_used_at is not None and row.last_used_at >= created.row.created_at


def test_rate_limits_per_key_and_the_keys_own_tighter_limit(engine: Engine) -> None:
    a = Instance(engine, rate=Limit.of("api-key", parse_rate("3/1m")))
    admin, _ = people(a)
    first, second = a.keys.create(admin, NewKey(name="a")), a.keys.create(admin, NewKey(name="b"))
    own = a.keys.create(admin, NewKey(name="c", rate_limit="1/1m"))
    for _ in range(3):
        a.use(first.key)
    with pytest.raises(
        RateLimitedError, match=r"^Rate limit exceeded for this API key\. Try again in \d+ seconds\.$"
    ):
        a.use(first.key)
    assert a.use(second.key).id == admin.id  # another key has its own budget
    a.use(own.key)
    with pytest.raises(RateLimitedError):
        a.use(own.key)


def test_replacing_the_default_key_and_revoking_by_name(engine: Engine) -> None:
    a = Instance(engine)
    admin, _ = people(a)
    old = a.keys.create(admin, NewKey(), replace=True)
    new = a.keys.create(admin, NewKey(), replace=True)
    with pytest.raises(AuthenticationError):
        a.use(old.key)
    assert [r.id for r in a.keys.list_keys(admin.id)] == [new.row.id]
    assert a.keys.revoke_named(admin, "default") == 1
    assert a.keys.revoke_named(admin, "default") == 0
    with pytest.raises(AuthenticationError):
        a.use(new.key)


def test_limits_on_creation(engine: Engine) -> None:
    a = Instance(engine, max_per_user=2)
    admin, user = people(a)
    a.keys.create(admin, NewKey(name="one"))
    a.keys.create(admin, NewKey(name="two"))
    with pytest.raises(
        BadRequestError, match=r"^An account can hold at most 2 API keys; revoke one first\.$"
    ):
        a.keys.create(admin, NewKey(name="three"))
    now = int(time.time())
    bad = [
        (NewKey(name=" "), "A key name must be 1 to 64 printable characters."),
        (NewKey(name="a\x00b"), "A key name must be 1 to 64 printable characters."),
        (NewKey(expires_at=now - 1), "The expiry must be in the future and at most ten years away."),
        (
            NewKey(expires_at=now + 20 * 366 * 86400),
            "The expiry must be in the future and at most ten years away.",
        ),
        (NewKey(paths=()), "'paths' must list at least one entry, or be left out for no restriction."),
        (
            NewKey(upstreams=()),
            "'upstreams' must list at least one entry, or be left out for no restriction.",
        ),
        (NewKey(paths=("ollama",)), "Invalid scope: 'ollama' is not a path prefix such as /ollama/api."),
        (
            NewKey(rate_limit="lots"),
            "rate_limit: expected <count>/<period> such as 5/3m, 20/180s, 10/minute or 100/hour.",
        ),
    ]
    for spec, message in bad:
        with pytest.raises(BadRequestError) as caught:
            a.keys.create(user, spec)
        assert caught.value.detail == message
    with pytest.raises(NotFoundError, match=r"^API key not found\.$"):
        a.keys.revoke(user, user.id, a.keys.list_keys(admin.id)[0].id)  # not theirs


def test_a_key_requested_by_a_session_that_ended_meanwhile_is_not_created(engine: Engine) -> None:
    a = Instance(engine)
    _, user = people(a)
    authenticated = user  # what the request was authenticated as, before ...
    a.accounts.revoke_all_sessions(user.id)  # ... "sign out everywhere" committed
    with pytest.raises(AuthenticationError, match=r"^This session has ended\. Please sign in again\.$"):
        a.keys.create(authenticated, NewKey())
    assert a.keys.list_keys(user.id) == []


@pytest.mark.parametrize("stale", [False, True], ids=["view", "database"])
def test_a_key_admitted_earlier_is_checked_again_as_it_stands(engine: Engine, stale: bool) -> None:
    """What a long-lived connection asks each second: the owner's role now, the key's existence now."""
    a = Instance(engine)
    admin, user = people(a)
    admitted = a.keys.identify(a.keys.create(user, NewKey()).key)
    a.keys.owner_allowed(a.keys.current(admitted.key, stale=stale).user)  # still good: no error
    a.accounts.update_user(admin, user.id, UserChanges(role="pending"))
    a.registry.sync()
    with pytest.raises(PermissionDeniedError, match="pending approval"):
        a.keys.owner_allowed(a.keys.current(admitted.key, stale=stale).user)
    a.accounts.update_user(admin, user.id, UserChanges(role="user"))
    a.keys.revoke(user, user.id, admitted.key.id)
    a.registry.sync()
    with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
        a.keys.current(admitted.key, stale=stale)


def test_keys_survive_a_restart(engine: Engine) -> None:
    a = Instance(engine)
    admin, _ = people(a)
    key = a.keys.create(admin, NewKey(paths=("/ollama/api",), upstreams=("ollama",))).key
    restarted = Instance(engine)
    admitted = restarted.keys.identify(key)
    assert admitted.key.scope == KeyScope(frozenset({"ollama"}), ("/ollama/api",))


def test_a_key_change_logged_by_the_release_before_is_applied(engine: Engine) -> None:
    """A rolling upgrade: an instance not yet upgraded names the key in `session_id` only."""
    a = Instance(engine)
    admin, _ = people(a)
    created = a.keys.create(admin, NewKey())
    assert a.use(created.key).id == admin.id
    with a.sessions() as db, db.begin():  # revoked the way the release before 0006 did it
        db.delete(db.get(ApiKey, created.row.id))
        db.add(AuthChange(at=int(time.time()), kind="api_key", user_id=admin.id, session_id=created.row.id))
    a.registry.sync()
    with pytest.raises(AuthenticationError):
        a.use(created.key)
    with a.sessions() as db:  # and this release's entries still name the key where the old one looks
        entries = db.scalars(select(AuthChange).where(AuthChange.kind == "api_key")).all()
    assert all(e.session_id == e.key_id for e in entries if e.key_id)
