"""The core path from a credential to a caller, and its refresh for connections that outlive a request."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable

import pytest

from wardgate.config import Settings
from wardgate.errors import AuthenticationError, RateLimitedError, StoreUnavailableError
from wardgate.gateway import Gateway
from wardgate.identity.authentication import (
    KEY_CONFIRMATIONS,
    KEY_CONFIRMATIONS_WAITING,
    Caller,
    Credential,
)
from wardgate.identity.key_material import NewKey
from wardgate.identity.records import ClientInfo, UserChanges
from wardgate.storage import db

PASSWORD = "correct-horse-battery"


def test_refresh_fails_closed_when_the_view_is_stale_and_the_database_gone(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WebSocket whose caller nobody can vouch for any more is closed, as an HTTP request is refused."""
    gateway = Gateway.build(make_settings())

    async def scenario() -> None:
        await gateway.start()
        user = gateway.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
        token = gateway.accounts.start_session(user, ClientInfo(), "password").token.token
        caller = await gateway.authenticator.authenticate(
            Credential(token, "header"), ip=None, keys_allowed=True
        )
        assert (await gateway.authenticator.refresh(caller)).user.id == user.id
        broken = db.create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
        monkeypatch.setattr(gateway.registry, "_sessions", db.session_factory(broken))
        gateway.registry.trusted = False  # the channel dropped: the view may have missed changes
        with pytest.raises(StoreUnavailableError):
            await gateway.authenticator.refresh(caller)
        broken.dispose()
        monkeypatch.undo()
        await gateway.stop()

    asyncio.run(scenario())


def test_a_key_made_on_another_instance_is_admitted_before_this_one_syncs(
    make_settings: Callable[..., Settings],
) -> None:
    """Two instances over one database, without Redis: B hears of A's keys only at its next poll
    (a minute here). A key made through A works on B at once (a 401 before: the view's miss was
    final), also for a WebSocket's re-check; what A ended meanwhile is still refused on B."""
    settings = make_settings(ENABLE_API_KEYS="true", SESSION_SYNC_INTERVAL="60")
    a, b = Gateway.build(settings), Gateway.build(settings)

    async def on_b(key: str) -> Caller:
        return await b.authenticator.authenticate(
            Credential(key, "header"), ip="192.0.2.9", keys_allowed=True
        )

    async def scenario() -> None:
        await a.start()
        await b.start()
        try:
            admin = a.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
            bob = a.accounts.create_user("Bob", "bob@example.com", PASSWORD, role="admin")
            fresh = a.api_keys.create(admin, NewKey(name="fresh")).key
            soon = a.api_keys.create(admin, NewKey(name="soon", expires_at=int(time.time()) + 2))
            revoked = a.api_keys.create(admin, NewKey(name="revoked"))
            a.api_keys.revoke(admin, admin.id, revoked.row.id)
            bobs = a.api_keys.create(bob, NewKey(name="bob")).key
            a.accounts.update_user(admin, bob.id, UserChanges(active=False))
            assert not b.registry.is_stale  # B trusts its view, which has heard of none of this

            caller = await on_b(fresh)
            assert caller.user.email == "ada@example.com"
            assert (await b.authenticator.refresh(caller)).user.email == "ada@example.com"
            while time.time() < soon.row.expires_at:
                await asyncio.sleep(0.05)
            with pytest.raises(AuthenticationError, match=r"^This API key has expired\.$"):
                await on_b(soon.key)
            for ended in (revoked.key, bobs):
                with pytest.raises(AuthenticationError, match=r"^Invalid API key\.$"):
                    await on_b(ended)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


def test_what_wardgate_issued_is_its_own_however_it_ended(make_settings: Callable[..., Settings]) -> None:
    """`is_ours` decides whether an `Authorization` value beside a session cookie is the app's own
    (passed on) or wardgate's (dropped). It used to ask whether the credential was still
    good, so a revoked or expired key, an expired token and a key made on an instance this one had
    not synced with yet were all passed on to the app behind."""
    settings = make_settings(ENABLE_API_KEYS="true", JWT_EXPIRES_IN="1h", SESSION_SYNC_INTERVAL="60")
    a, b = Gateway.build(settings), Gateway.build(settings)
    other = Gateway.build(make_settings(WEBUI_SECRET_KEY=secrets.token_urlsafe(32)))

    async def scenario() -> None:
        await a.start()
        await b.start()
        try:
            admin = a.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
            live = a.accounts.start_session(admin, ClientInfo(), "password").token.token
            expired = a.codec.issue(admin.id, admin.session_stamp, now=time.time() - 7200).token
            revoked = a.api_keys.create(admin, NewKey(name="revoked"))
            a.api_keys.revoke(admin, admin.id, revoked.row.id)
            fresh = a.api_keys.create(admin, NewKey(name="fresh")).key  # B has not heard of it
            foreign = other.codec.issue(admin.id, admin.session_stamp).token  # another site's secret
            ahead = a.codec.issue(admin.id, admin.session_stamp, now=time.time() + 600).token  # fast clock
            ours = [live, expired, ahead, revoked.key, fresh, "sk-" + secrets.token_hex(32)]
            theirs = [foreign, "sk-" + secrets.token_hex(16), "the-apps-own-jwt", "sk-" + "g" * 64, ""]
            for gateway in (a, b):
                is_ours = gateway.authenticator.is_ours
                assert [is_ours(f"Bearer {value}") for value in ours] == [True] * 6
                assert [is_ours(f"Bearer {value}") for value in theirs] == [False] * 5
                # However it is written: another spacing, no scheme, or among other words
                assert [is_ours(value) for value in (f"Bearer\t{live}", live, f"Bearer x {fresh}")] == [
                    True
                ] * 3
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("workers", ["1", "2"])  # the failure limit in memory, or in the workers' file
def test_a_flood_of_made_up_keys_is_looked_up_a_few_at_a_time(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """Every made-up key is refused; the database sees at most `KEY_CONFIRMATIONS` of them at once,
    with `KEY_CONFIRMATIONS_WAITING` more waiting the rest are answered 503 (busy) without a
    look-up, and an address over its failure limit is answered 429 without one."""
    settings = make_settings(ENABLE_API_KEYS="true", AUTH_FAILURE_RATE_LIMIT="2/1m", UVICORN_WORKERS=workers)
    (settings.data_dir / "run").mkdir(exist_ok=True)  # `wardgate serve` makes it for its workers
    gateway = Gateway.build(settings)
    lock, running, most, looked = threading.Lock(), [0], [0], [0]
    lookup = gateway.api_keys._check_in_database

    def counted(*args: object) -> object:
        with lock:
            running[0] += 1
            looked[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.01)
            return lookup(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(gateway.api_keys, "_check_in_database", counted)

    async def attempt(ip: str) -> BaseException | None:
        try:
            key = f"sk-{secrets.token_hex(32)}"
            await gateway.authenticator.authenticate(Credential(key, "header"), ip=ip, keys_allowed=True)
        except (AuthenticationError, RateLimitedError, StoreUnavailableError) as exc:
            return exc
        return None

    async def scenario() -> None:
        await gateway.start()
        try:
            flood = KEY_CONFIRMATIONS + KEY_CONFIRMATIONS_WAITING + 20
            refusals = await asyncio.gather(*(attempt(f"198.51.100.{n % 200}") for n in range(flood)))
            looked_up = KEY_CONFIRMATIONS + KEY_CONFIRMATIONS_WAITING
            assert [type(r) for r in refusals] == [AuthenticationError] * looked_up + [
                StoreUnavailableError
            ] * 20
            assert {str(r) for r in refusals[:looked_up]} == {"Invalid API key."}
            assert 1 < most[0] <= KEY_CONFIRMATIONS
            assert looked[0] == looked_up  # the rest: none
            before = looked[0]  # one address, past AUTH_FAILURE_RATE_LIMIT (2/1m): 429, no look-up
            answers = [await attempt("203.0.113.7") for _ in range(3)]
            assert [type(r) for r in answers] == [AuthenticationError, AuthenticationError, RateLimitedError]
            assert looked[0] - before == 2
        finally:
            await gateway.stop()

    asyncio.run(scenario())
