"""An open WebSocket obeys the admission rules as they change: a real wardgate, the real fake upstream."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import bearer
from tests.proxy.conftest import account, gateway_env
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Ollama admits the group ai-users only; programs may hold keys."""
    data = tmp_path_factory.mktemp("sockets")
    env = gateway_env(
        data,
        upstream,
        OLLAMA_ALLOWED_GROUPS="ai-users",
        ENABLE_API_KEYS="true",
        USER_PERMISSIONS_FEATURES_API_KEYS="true",
    )
    with wardgate_process(env) as base:
        account(base, "admin@example.com", name="Admin")  # the first account: the admin
        yield base, data / "wardgate.db"


def _admin(base: str) -> str:
    return str(account(base, "admin@example.com", name="Admin")["token"])


def _set_groups(database: Path, email: str, groups: list[str]) -> None:
    """What a single sign-on with a groups claim writes, done to the server's database directly."""
    with sqlite3.connect(database) as db:
        (user_id,) = db.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()
        db.execute("DELETE FROM user_groups WHERE user_id = ?", (user_id,))
        db.executemany(
            "INSERT INTO user_groups (user_id, name) VALUES (?, ?)", [(user_id, g) for g in groups]
        )
        db.execute(
            "INSERT INTO auth_changes (at, kind, user_id) VALUES (?, 'user', ?)", (int(time.time()), user_id)
        )


def _closed_within(socket: ClientConnection, seconds: float) -> int:
    """The close code the server sent, asserting it came within `seconds`."""
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        _receive_until_closed(socket, seconds + 2)
    assert time.monotonic() - started < seconds, time.monotonic() - started
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def _receive_until_closed(socket: ClientConnection, timeout: float) -> None:
    while True:
        socket.recv(timeout=timeout)


def _echo_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ollama/ws/echo"


def _say_hi(socket: ClientConnection) -> None:
    socket.send("hi")
    reply = socket.recv(timeout=5)
    assert isinstance(reply, str) and reply.endswith(":hi")


def test_a_socket_closes_when_its_user_is_demoted_to_pending(site: tuple[str, Path]) -> None:
    base, database = site
    person = account(base, "pat@example.com", name="Pat")
    _set_groups(database, "pat@example.com", ["ai-users"])
    time.sleep(0.5)
    cookie = {"Cookie": f"token={person['token']}", "Origin": base}
    with connect(_echo_url(base), additional_headers=cookie) as socket:
        _say_hi(socket)
        demoted = httpx.post(
            f"{base}/api/v1/users/{person['id']}/update",
            json={"role": "pending"},
            headers=bearer(_admin(base)),
        )
        assert demoted.status_code == 200
        assert _closed_within(socket, 2.5) == 1008
    # And plain HTTP agrees: refused.
    assert httpx.get(f"{base}/ollama/api/tags", headers=bearer(person["token"])).status_code == 403


def test_a_socket_closes_when_the_group_the_upstream_requires_is_removed(site: tuple[str, Path]) -> None:
    base, database = site
    person = account(base, "gus@example.com", name="Gus")
    _set_groups(database, "gus@example.com", ["ai-users", "staff"])
    time.sleep(0.5)
    cookie = {"Cookie": f"token={person['token']}", "Origin": base}
    with connect(_echo_url(base), additional_headers=cookie) as socket:
        _say_hi(socket)
        _set_groups(database, "gus@example.com", ["staff"])  # the provider moved Gus out of ai-users
        assert _closed_within(socket, 2.5) == 1008


def test_a_keys_socket_closes_when_its_owner_leaves_the_upstreams_group(site: tuple[str, Path]) -> None:
    """The upstream's group rule, re-applied to an API key's owner while the socket is open."""
    base, database = site
    person = account(base, "kim@example.com", name="Kim")
    _set_groups(database, "kim@example.com", ["ai-users"])
    key = httpx.post(f"{base}/api/v1/auths/api_keys", json={"name": "bot"}, headers=bearer(person["token"]))
    assert key.status_code == 200, key.text
    time.sleep(0.5)
    with connect(_echo_url(base), additional_headers={"x-api-key": key.json()["api_key"]}) as socket:
        _say_hi(socket)
        _set_groups(database, "kim@example.com", [])
        assert _closed_within(socket, 2.5) == 1008
