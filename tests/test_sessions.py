"""The revocation view, against SQLite and a real PostgreSQL: coherent across instances, fail closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from wardgate.audit.log import AuditLog
from wardgate.config import load_settings
from wardgate.errors import AuthenticationError, StoreUnavailableError
from wardgate.gateway import account_policy
from wardgate.identity.accounts import AccountService
from wardgate.identity.directory import Directory
from wardgate.identity.records import ClientInfo, UserChanges
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import RateLimiter
from wardgate.security.tokens import TokenCodec
from wardgate.sessions.registry import SessionRegistry
from wardgate.storage import db, schema
from wardgate.storage.models import AuthChange

PASSWORD = "correct-horse-battery"
HASHER = PasswordHasher()


class Instance:
    """One wardgate process's services over a shared database."""

    def __init__(self, engine: Engine) -> None:
        self.sessions = db.session_factory(engine)
        self.registry = SessionRegistry(self.sessions, stale_after=30, publish=lambda: None)
        self.codec = TokenCodec(["k" * 48], timedelta(hours=1))
        policy = account_policy(load_settings({"WEBUI_SECRET_KEY": "k" * 48}, env_file=None))
        audit = AuditLog(self.sessions)
        self.accounts = AccountService(
            self.sessions, self.registry, HASHER, self.codec, policy, RateLimiter(), audit
        )
        self.directory = Directory(self.sessions)
        self.registry.load()

    def check(self, token: str) -> str:
        claims = self.codec.verify(token)
        user = self.registry.check(claims) or self.registry.check_in_database(claims)
        return user.role


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = db.create_db_engine(database_url)
    schema.upgrade(engine)
    yield engine
    engine.dispose()


def test_signout_on_one_instance_reaches_the_other(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    b.registry.sync()
    signed = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo())
    assert b.check(signed.token.token) == "admin"
    b.accounts.signout(b.codec.verify(signed.token.token))
    with pytest.raises(AuthenticationError):
        b.check(signed.token.token)  # the local write applies at once
    assert a.check(signed.token.token) == "admin"  # a has not synchronised yet ...
    a.registry.sync()
    with pytest.raises(AuthenticationError):
        a.check(signed.token.token)  # ... and refuses once it has


def test_role_change_disable_and_delete_propagate(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    admin = a.accounts.create_user("Admin", "admin@example.com", PASSWORD, role=None)
    user = a.accounts.create_user("Bob", "bob@example.com", PASSWORD, role="user")
    token = a.accounts.signin("bob@example.com", PASSWORD, ClientInfo()).token.token
    b.registry.sync()
    assert b.check(token) == "user"
    a.accounts.update_user(admin, user.id, UserChanges(role="pending"))
    b.registry.sync()
    assert b.check(token) == "pending"
    a.accounts.update_user(admin, user.id, UserChanges(active=False))
    b.registry.sync()
    with pytest.raises(AuthenticationError):
        b.check(token)
    a.accounts.delete_user(admin, user.id)
    b.registry.sync()
    assert user.id not in b.registry.view.users


def test_revocations_survive_a_restart(engine: Engine) -> None:
    a = Instance(engine)
    a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    signed = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo())
    a.accounts.signout(a.codec.verify(signed.token.token))
    restarted = Instance(engine)
    with pytest.raises(AuthenticationError):
        restarted.check(signed.token.token)


def test_changes_committed_out_of_order_are_not_missed(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    user = a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    signed = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo())
    with a.sessions() as s, s.begin():
        top = s.scalar(select(func.max(AuthChange.id))) or 0
        s.add(AuthChange(id=top + 5, at=int(time.time()), kind="user", user_id=user.id))
    b.registry.sync()  # b has now seen id top+5
    with a.sessions() as s, s.begin():  # a transaction that took a lower id commits late
        s.add(
            AuthChange(
                id=top + 2,
                at=int(time.time()),
                kind="session",
                user_id=user.id,
                session_id=signed.token.session_id,
                expires_at=signed.token.expires_at,
            )
        )
    b.registry.sync()
    with pytest.raises(AuthenticationError):
        b.check(signed.token.token)


def test_stale_view_falls_back_to_the_database(engine: Engine) -> None:
    a, b = Instance(engine), Instance(engine)
    a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    signed = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo())
    a.accounts.signout(a.codec.verify(signed.token.token))
    b.registry.stale_after = 0  # b missed the change and knows its view is old
    assert b.registry.is_stale
    with pytest.raises(AuthenticationError):
        b.registry.check_in_database(b.codec.verify(signed.token.token))


def test_stale_view_with_the_database_down_fails_closed(engine: Engine) -> None:
    a = Instance(engine)
    a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    token = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo()).token.token
    broken = db.create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    offline = SessionRegistry(db.session_factory(broken), stale_after=0, publish=lambda: None)
    with pytest.raises(StoreUnavailableError):
        offline.check_in_database(a.codec.verify(token))
    broken.dispose()


def test_last_seen_is_batched_and_old_revocations_pruned(engine: Engine) -> None:
    a = Instance(engine)
    user = a.accounts.create_user("Ann", "ann@example.com", PASSWORD, role=None)
    signed = a.accounts.signin("ann@example.com", PASSWORD, ClientInfo(ip="10.0.0.1"))
    a.registry.touch(signed.token.session_id, user.id, "10.0.0.2")
    a.registry.flush_touches()
    (session,) = a.directory.sessions_of(user.id).rows
    assert session.ip == "10.0.0.2"
    assert a.accounts.get_user(user.id).last_active_at is not None
    a.registry.view.revoke("gone", int(time.time()) - 5)
    assert a.registry.prune_view(int(time.time()), threading.Event()) == 1
    assert "gone" not in a.registry.view.revoked


def test_concurrent_first_signups_make_exactly_one_admin(engine: Engine) -> None:
    instances = [Instance(engine) for _ in range(4)]

    def create(i: int) -> str:
        return instances[i % 4].accounts.create_user(f"U{i}", f"u{i}@example.com", None, role=None).role

    with ThreadPoolExecutor(max_workers=16) as pool:
        roles = list(pool.map(create, range(32)))
    assert roles.count("admin") == 1
    assert roles.count("pending") == 31


def test_overlapping_syncs_never_leave_the_view_older_than_the_log(engine: Engine) -> None:
    """The poll and a notice sync at once: the one that read first must not apply last over the other.

    The poll is held after reading the log (Bob still an admin); Bob is demoted; a second sync
    starts. Run one after the other, the view ends with the demotion; interleaved, the poll's older
    row would win and the demotion, already marked as seen, would never be applied.
    """
    a = Instance(engine)
    ada = a.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
    bob = a.accounts.create_user("Bob", "bob@example.com", PASSWORD, role="admin")
    a.registry.sync()
    a.accounts.update_user(ada, bob.id, UserChanges(name="Bob B"))  # a change the poll will read
    real_lock, poll_read, release = a.registry._lock, threading.Event(), threading.Event()

    class HeldPoll:
        """The view's lock, which the poll thread takes only once released."""

        def __enter__(self) -> bool:
            if threading.current_thread().name == "poll":
                poll_read.set()
                release.wait(5)
            return real_lock.__enter__()

        def __exit__(self, *exc: object) -> None:
            real_lock.__exit__(*exc)

    a.registry._lock = HeldPoll()  # type: ignore[assignment]
    poll = threading.Thread(target=a.registry.sync, name="poll")
    poll.start()
    assert poll_read.wait(5)  # the poll has read Bob as an admin
    a.accounts.update_user(ada, bob.id, UserChanges(role="user"))
    notice = threading.Thread(target=a.registry.sync, name="notice")
    notice.start()
    time.sleep(0.2)  # give an unguarded second sync the time to finish first
    release.set()
    poll.join(5)
    notice.join(5)
    a.registry._lock = real_lock
    assert a.registry.view.users[bob.id].role == "user"
