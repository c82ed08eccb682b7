"""Groups from single sign-on reach the access rules and the identity headers of the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from tests.conftest import bearer, signup
from wardgate.config import Settings
from wardgate.config.values import Role
from wardgate.gateway import Gateway
from wardgate.proxy.upstreams import Upstream, UpstreamTable
from wardgate.storage import schema

pytestmark = pytest.mark.slow
USERS = frozenset({Role.USER, Role.ADMIN})


def test_routing_is_by_path_segment() -> None:
    ollama, app = (
        Upstream(name, "http://o", mount, USERS, frozenset())
        for name, mount in (("ollama", "/ollama"), ("app", ""))
    )
    table = UpstreamTable((ollama, app))
    assert table.route("/ollama/api/tags").name == "ollama"  # type: ignore[union-attr]
    assert table.route("/ollama").name == "ollama"  # type: ignore[union-attr]
    assert table.route("/ollamax/api").name == "app"  # type: ignore[union-attr]
    assert UpstreamTable((ollama,)).route("/other") is None


def test_access_rules_need_an_allowed_role_and_a_listed_group() -> None:
    upstream = Upstream("openai", "http://x", "/openai", USERS, frozenset({"ml", "ops"}))
    assert upstream.admits(Role.USER, ["ml"])
    assert not upstream.admits(Role.USER, ["sales"])
    assert not upstream.admits(Role.PENDING, ["ml"])
    assert Upstream("o", "http://x", "/o", USERS, frozenset()).admits(Role.USER, [])


def test_groups_gate_the_upstream_and_reach_it_as_a_header(
    make_client: Callable[..., TestClient], make_settings: Callable[..., Settings], upstream: str
) -> None:
    env = {
        "UPSTREAM_URL": upstream,
        "OPENAI_API_BASE_URL": f"{upstream}/v1",
        "OPENAI_ALLOWED_GROUPS": "ml",
        "DEFAULT_USER_ROLE": "user",
    }
    client = make_client(**env)
    signup(client, "admin@example.com")
    token = signup(client, "eve@example.com")["token"]
    refused = client.get("/openai/models", headers=bearer(token))
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Your account may not use the openai service."}

    other = Gateway.build(make_settings(**env))  # e.g. an SSO sign-in on another instance
    schema.upgrade(other.engine)
    other.registry.load()
    user = other.accounts.find_by_email("eve@example.com")
    assert user is not None
    other.accounts.set_groups(user.id, ["ml", "readers"])
    other.engine.dispose()

    deadline = time.monotonic() + 5
    while client.get("/openai/models", headers=bearer(token)).status_code != 200:
        assert time.monotonic() < deadline, "the group change never reached this instance"
        time.sleep(0.1)
    seen = client.get("/app/facts", headers=bearer(token)).json()
    assert seen["identity"]["x-forwarded-groups"] == "ml,readers"
