"""The core path from a credential to a caller, and its refresh for connections that outlive a request."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import pytest

from wardgate.config import Settings
from wardgate.errors import AuthenticationError, StoreUnavailableError
from wardgate.gateway import Gateway
from wardgate.identity.authentication import KEY_CONFIRMATIONS, Credential
from wardgate.identity.key_material import NewKey
from wardgate.identity.records import ClientInfo
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
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instances over one database, without Redis: B hears of A's new key only at its next poll
    (a minute here). A program that makes a key through A and calls B at once is admitted (it got a
    401 before: the view's miss was final), a made-up key is still refused, and a flood of made-up
    keys looks them up at most `KEY_CONFIRMATIONS` at a time."""
    settings = make_settings(ENABLE_API_KEYS="true", SESSION_SYNC_INTERVAL="60")
    a, b = Gateway.build(settings), Gateway.build(settings)
    looking: list[int] = [0, 0]  # now, most at once
    lookup = b.api_keys._check_in_database

    def counted(*args: object) -> object:
        looking[0] += 1
        looking[1] = max(looking)
        try:
            time.sleep(0.01)
            return lookup(*args)  # type: ignore[arg-type]
        finally:
            looking[0] -= 1

    async def scenario() -> None:
        await a.start()
        await b.start()
        admin = a.accounts.create_user("Ada", "ada@example.com", PASSWORD, role=None)
        key = a.api_keys.create(admin, NewKey(name="fresh")).key
        assert not b.registry.is_stale  # B trusts its view, which has not heard of the key
        caller = await b.authenticator.authenticate(Credential(key, "header"), ip=None, keys_allowed=True)
        assert caller.user.email == "ada@example.com"

        monkeypatch.setattr(b.api_keys, "_check_in_database", counted)
        made_up = [f"sk-{secrets.token_hex(32)}" for _ in range(3 * KEY_CONFIRMATIONS)]
        refusals = await asyncio.gather(
            *(
                b.authenticator.authenticate(Credential(k, "header"), ip=None, keys_allowed=True)
                for k in made_up
            ),
            return_exceptions=True,
        )
        assert {str(r) for r in refusals} == {"Invalid API key."}, refusals
        assert all(isinstance(r, AuthenticationError) for r in refusals)
        assert looking[1] == KEY_CONFIRMATIONS
        monkeypatch.undo()
        await a.stop()
        await b.stop()

    asyncio.run(scenario())
