"""The core path from a credential to a caller, and its refresh for connections that outlive a request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from wardgate.config import Settings
from wardgate.errors import StoreUnavailableError
from wardgate.gateway import Gateway
from wardgate.identity.authentication import Credential
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
