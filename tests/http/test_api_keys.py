"""API keys over HTTP: create, use, expire, revoke; scopes; both carriers; admin; limits; audit.

"Using" a key needs a route that accepts programs. The reverse proxy is one; here a probe route
stands in for it, built exactly as a proxy route must be: `CallerDep` (`authenticate_caller`), then
`caller.may_reach(upstream, path)`. wardgate's own routes are called as they are.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient
from tests.conftest import ORIGIN, PASSWORD, REDIS_URL, SECRET, bearer, refused, signup
from tests.servers import free_port, stop

from wardgate.config import Settings
from wardgate.errors import AuthenticationError, PermissionDeniedError
from wardgate.gateway import Gateway
from wardgate.http.application import build_routes
from wardgate.http.deps import CallerDep
from wardgate.http.middleware.csrf import REFUSAL
from wardgate.identity.authentication import KEYS_NOT_HERE, KeyPrincipal
from wardgate.identity.key_material import ApiKeyHasher
from wardgate.sessions import registry as registry_module
from wardgate.storage.models import ApiKey, Base

KEYS = "/api/v1/auths/api_keys"
OWUI_KEY = "/api/v1/auths/api_key"
ALL_KEYS = "/api/v1/api_keys"
ME = "/api/v1/auths/"
USERS = "/api/v1/users/"
AUDIT = "/api/v1/audit"
CHAT = "/probe/ollama/ollama/api/chat"

INVALID = "Invalid API key."
EXPIRED = "This API key has expired."
DISABLED = "API keys are disabled on this site."
NO_PERMISSION = "You do not have permission to create API keys."
NOT_ALLOWED = "API keys are not allowed for this account."
PENDING = "Your account is pending approval by an administrator."
SCOPE = "This API key may not be used for this path."
NOT_FOUND = "API key not found."
ADMIN_REQUIRED = "Administrator access is required."
SHOWN_ONCE = (
    "wardgate keeps only a hash of each API key, so a key cannot be shown again. "
    "Create a new one, or list your keys' details at /api/v1/auths/api_keys."
)
KEY_SHAPE = re.compile(r"sk-[0-9a-f]{64}")
INFO_FIELDS = {
    "id",
    "user_id",
    "name",
    "prefix",
    "created_at",
    "expires_at",
    "last_used_at",
    "upstreams",
    "paths",
    "rate_limit",
    "models",
    "token_budget",
    "acts_for_users",  # issue 19: a service key (tests/acting)
}
ENABLED = {
    "ENABLE_API_KEYS": "true",
    "DEFAULT_USER_ROLE": "user",
    "SIGNUP_RATE_LIMIT": "1000/1h",
    "SIGNIN_RATE_LIMIT": "1000/1m",
    "SIGNIN_IP_RATE_LIMIT": "1000/1m",
}
CARRIERS: dict[str, Callable[[str], dict[str, str]]] = {
    "bearer": lambda key: {"Authorization": f"Bearer {key}"},
    "x-api-key": lambda key: {"x-api-key": key},
}

MakeProbe = Callable[..., TestClient]


@pytest.fixture
def make_probe(make_settings: Callable[..., Settings]) -> Iterator[MakeProbe]:
    """wardgate's routes (API keys on) plus a probe that accepts programs like a proxy route."""
    clients: list[TestClient] = []

    async def reach(upstream: str, path: str, caller: CallerDep) -> dict[str, str]:
        if not caller.may_reach(upstream, "/" + path):
            raise PermissionDeniedError(SCOPE, code="api_key_scope")
        return {"email": caller.user.email, "caller": type(caller).__name__, "via": caller.via}

    def make(**overrides: str) -> TestClient:
        app = build_routes(Gateway.build(make_settings(**{**ENABLED, **overrides})))
        app.add_api_route("/probe/{upstream}/{path:path}", reach, methods=["GET", "POST"])
        app.router.routes.insert(0, app.router.routes.pop())  # ahead of the reverse proxy's catch-all
        client = TestClient(app, base_url=ORIGIN, headers={"origin": ORIGIN})
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def probe(make_probe: MakeProbe) -> TestClient:
    """The default: keys on, users may not create them (Open WebUI's default)."""
    return make_probe()


def people(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first account (admin) and a second one (role user)."""
    admin = signup(client, "ada@example.com", name="Ada")
    user = signup(client, "bob@example.com", name="Bob")
    return admin, user


def create(client: TestClient, token: str, **form: Any) -> dict[str, Any]:
    """Create a key through the API (asserting success)."""
    response = client.post(KEYS, json=form, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


def use(client: TestClient, key: str, path: str = CHAT, carrier: str = "bearer") -> httpx.Response:
    """Call the probe with a key in one of the two carriers."""
    return client.get(path, headers=CARRIERS[carrier](key))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `condition()` holds (another instance's background sync)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# --- creating and using ----------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_created_key_works_in_either_header(probe: TestClient, carrier: str) -> None:
    admin, _ = people(probe)
    created = create(probe, admin["token"], name="ci")
    assert set(created) == INFO_FIELDS | {"api_key"}
    assert KEY_SHAPE.fullmatch(created["api_key"])
    assert created["prefix"] == created["api_key"][:11] and created["name"] == "ci"
    response = use(probe, created["api_key"], carrier=carrier)
    assert response.status_code == 200
    via = "header" if carrier == "bearer" else "api-key-header"
    assert response.json() == {"email": "ada@example.com", "caller": "KeyPrincipal", "via": via}


def test_the_key_is_shown_once_and_only_its_hash_is_stored(
    probe: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    admin, _ = people(probe)
    created = create(probe, admin["token"], name="ci")
    key = created["api_key"]
    listed = probe.get(KEYS, headers=bearer(admin["token"]))
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    assert listed.json() == [{k: v for k, v in created.items() if k != "api_key"}]
    assert refused(probe.get(OWUI_KEY, headers=bearer(admin["token"])), 404) == SHOWN_ONCE
    assert use(probe, key).status_code == 200
    engine = create_engine(f"sqlite:///{tmp_path / 'wardgate.db'}")
    with engine.connect() as connection:
        (row,) = connection.execute(select(ApiKey)).all()
        assert row.key_hash == ApiKeyHasher(SECRET).digest(key)
        for table in Base.metadata.sorted_tables:  # the key is in no column of any table
            for stored in connection.execute(select(table)):
                assert not any(key[11:] in str(value) for value in stored)
    engine.dispose()
    assert key[11:] not in caplog.text


def test_open_webui_routes_keep_one_default_key(probe: TestClient) -> None:
    admin, _ = people(probe)
    first = probe.post(OWUI_KEY, headers=bearer(admin["token"]))
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    assert set(first.json()) == {"api_key"} and KEY_SHAPE.fullmatch(first.json()["api_key"])
    second = probe.post(OWUI_KEY, headers=bearer(admin["token"])).json()["api_key"]
    assert refused(use(probe, first.json()["api_key"]), 401) == INVALID  # replaced
    assert use(probe, second).status_code == 200
    assert [k["name"] for k in probe.get(KEYS, headers=bearer(admin["token"])).json()] == ["default"]
    deleted = probe.delete(OWUI_KEY, headers=bearer(admin["token"]))
    assert deleted.status_code == 200 and deleted.json() is True
    assert refused(use(probe, second), 401) == INVALID
    assert probe.delete(OWUI_KEY, headers=bearer(admin["token"])).json() is True  # none left: still true


@pytest.mark.slow
def test_expiry_by_date_and_by_days(probe: TestClient) -> None:
    admin, _ = people(probe)
    expiry = int(time.time()) + 2  # whole seconds: 1 could already be past when a slow machine checks it
    soon = create(probe, admin["token"], expires_at=expiry)
    later = create(probe, admin["token"], expires_in_days=30)
    assert abs(later["expires_at"] - (time.time() + 30 * 86400)) < 5
    assert use(probe, soon["api_key"]).status_code == 200
    time.sleep(max(0.0, expiry + 0.1 - time.time()))
    assert refused(use(probe, soon["api_key"]), 401) == EXPIRED
    assert use(probe, later["api_key"]).status_code == 200


@pytest.mark.parametrize(
    ("form", "detail"),
    [
        ({"expires_in_days": 1, "expires_at": 2**40}, "Give expires_in_days or expires_at, not both."),
        ({"expires_at": 1}, "The expiry must be in the future and at most ten years away."),
        ({"name": "\t"}, "A key name must be 1 to 64 printable characters."),
        ({"paths": []}, "'paths' must list at least one entry, or be left out for no restriction."),
        (
            {"paths": ["/ollama/../admin"]},
            "Invalid scope: '/ollama/../admin' is not a path prefix such as /ollama/api.",
        ),
        (
            {"rate_limit": "often"},
            "rate_limit: expected <count>/<period> such as 5/3m, 20/180s, 10/minute or 100/hour.",
        ),
    ],
)
def test_refused_key_requests(probe: TestClient, form: dict[str, Any], detail: str) -> None:
    admin, _ = people(probe)
    assert refused(probe.post(KEYS, json=form, headers=bearer(admin["token"])), 400) == detail


def test_unknown_upstreams_are_refused_by_the_schema(probe: TestClient) -> None:
    admin, _ = people(probe)
    response = probe.post(KEYS, json={"upstreams": ["redis"]}, headers=bearer(admin["token"]))
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["body", "upstreams", 0]]


# --- revoking -----------------------------------------------------------------------------------------


def test_revoking_a_key(probe: TestClient) -> None:
    admin, user = people(probe)
    kept, gone = create(probe, admin["token"], name="kept"), create(probe, admin["token"], name="gone")
    response = probe.delete(f"{KEYS}/{gone['id']}", headers=bearer(admin["token"]))
    assert response.status_code == 200 and response.json() is True
    assert refused(use(probe, gone["api_key"]), 401) == INVALID
    assert use(probe, kept["api_key"]).status_code == 200
    assert refused(probe.delete(f"{KEYS}/{gone['id']}", headers=bearer(admin["token"])), 404) == NOT_FOUND
    assert refused(probe.delete(f"{KEYS}/{kept['id']}", headers=bearer(user["token"])), 404) == NOT_FOUND
    assert use(probe, kept["api_key"]).status_code == 200  # someone else cannot revoke it


@pytest.mark.parametrize("how", ["sign-out-everywhere", "password-change"])
def test_securing_the_account_ends_its_keys(make_probe: MakeProbe, how: str) -> None:
    probe = make_probe(USER_PERMISSIONS_FEATURES_API_KEYS="true")
    _, user = people(probe)
    key = create(probe, user["token"])["api_key"]
    if how == "sign-out-everywhere":
        assert probe.post("/api/v1/auths/sessions/revoke", headers=bearer(user["token"])).status_code == 200
    else:
        form = {"password": PASSWORD, "new_password": "another-long-password"}
        assert probe.post("/api/v1/auths/update/password", json=form, headers=bearer(user["token"])).json()
    assert refused(use(probe, key), 401) == INVALID
    fresh = probe.post(
        "/api/v1/auths/signin",
        json={
            "email": "bob@example.com",
            "password": PASSWORD if how != "password-change" else "another-long-password",
        },
    ).json()["token"]
    assert probe.get(KEYS, headers=bearer(fresh)).json() == []


def test_pending_disabled_and_deleted_owners_keys_reach_nothing(make_probe: MakeProbe) -> None:
    probe = make_probe(USER_PERMISSIONS_FEATURES_API_KEYS="true")
    admin, user = people(probe)
    key = create(probe, user["token"])["api_key"]
    edit = f"{USERS}{user['id']}/update"
    assert probe.post(edit, json={"role": "pending"}, headers=bearer(admin["token"])).status_code == 200
    for carrier in CARRIERS:
        assert refused(use(probe, key, carrier=carrier), 403) == PENDING
    assert probe.post(edit, json={"role": "user"}, headers=bearer(admin["token"])).status_code == 200
    assert use(probe, key).status_code == 200
    assert probe.post(edit, json={"active": False}, headers=bearer(admin["token"])).status_code == 200
    assert refused(use(probe, key), 401) == INVALID
    assert probe.post(edit, json={"active": True}, headers=bearer(admin["token"])).status_code == 200
    assert refused(use(probe, key), 401) == INVALID  # enabling again does not revive keys
    second = signup(probe, "cy@example.com")
    other = create(probe, second["token"])["api_key"]
    assert probe.delete(f"{USERS}{second['id']}", headers=bearer(admin["token"])).status_code == 200
    assert refused(use(probe, other), 401) == INVALID
    assert refused(probe.get(f"{USERS}{second['id']}/api_keys", headers=bearer(admin["token"])), 404) == (
        "User not found."
    )


def test_a_key_revoked_on_one_instance_is_refused_on_the_other(make_probe: MakeProbe) -> None:
    a, b = make_probe(), make_probe()  # one database, two processes' worth of services
    admin, _ = people(a)
    created = create(a, admin["token"])
    wait_for(lambda: use(b, created["api_key"]).status_code == 200)
    assert a.delete(f"{KEYS}/{created['id']}", headers=bearer(admin["token"])).json() is True
    assert refused(use(a, created["api_key"]), 401) == INVALID
    wait_for(lambda: use(b, created["api_key"]).status_code == 401)
    assert refused(use(b, created["api_key"], carrier="x-api-key"), 401) == INVALID


def test_a_stale_view_checks_keys_in_the_database(probe: TestClient) -> None:
    admin, _ = people(probe)
    kept, gone = create(probe, admin["token"]), create(probe, admin["token"])
    gateway: Gateway = probe.app.state.gateway
    gateway.registry.stale_after = 0  # as if synchronisation had stopped: every check asks the database
    assert gateway.registry.is_stale
    assert probe.delete(f"{KEYS}/{gone['id']}", headers=bearer(admin["token"])).json() is True
    for carrier in CARRIERS:
        assert use(probe, kept["api_key"], carrier=carrier).status_code == 200
        assert refused(use(probe, gone["api_key"], carrier=carrier), 401) == INVALID


def test_a_key_admitted_earlier_is_refreshed_for_long_lived_connections(probe: TestClient) -> None:
    admin, _ = people(probe)
    created = create(probe, admin["token"])
    gateway: Gateway = probe.app.state.gateway
    admitted = gateway.api_keys.identify(created["api_key"])
    caller = KeyPrincipal(admitted.user, admitted.key, "api-key-header", gateway.api_keys.policy.endpoints)
    assert asyncio.run(gateway.authenticator.refresh(caller)).user.id == admitted.user.id
    probe.delete(f"{KEYS}/{created['id']}", headers=bearer(admin["token"]))
    with pytest.raises(AuthenticationError):
        asyncio.run(gateway.authenticator.refresh(caller))


def test_last_used_is_recorded_off_the_request_path(
    probe: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        registry_module, "LAST_SEEN_INTERVAL", 0.0
    )  # written at the next flush, not in a minute
    admin, _ = people(probe)
    created = create(probe, admin["token"])
    assert created["last_used_at"] is None
    assert use(probe, created["api_key"]).status_code == 200

    def last_used() -> Any:
        return probe.get(KEYS, headers=bearer(admin["token"])).json()[0]["last_used_at"]

    wait_for(lambda: last_used() is not None)  # written by the background flush
    assert last_used() >= created["created_at"]


# --- who may create and use keys ----------------------------------------------------------------------


def test_feature_disabled_refuses_creating_with_403_and_using_with_401(make_probe: MakeProbe) -> None:
    on = make_probe()
    admin, _ = people(on)
    key = create(on, admin["token"])["api_key"]
    off = make_probe(ENABLE_API_KEYS="false")  # the same database, the feature switched off
    assert refused(off.post(KEYS, json={}, headers=bearer(admin["token"])), 403) == DISABLED
    assert refused(off.post(OWUI_KEY, headers=bearer(admin["token"])), 403) == DISABLED
    for carrier in CARRIERS:
        assert refused(use(off, key, carrier=carrier), 401) == DISABLED
    assert off.get("/api/config").json()["features"]["enable_api_key"] is False
    assert on.get("/api/config").json()["features"]["enable_api_key"] is True


def test_users_need_the_permission(make_probe: MakeProbe) -> None:
    strict = make_probe()
    admin, user = people(strict)
    assert refused(strict.post(KEYS, json={}, headers=bearer(user["token"])), 403) == NO_PERMISSION
    assert refused(strict.post(OWUI_KEY, headers=bearer(user["token"])), 403) == NO_PERMISSION
    assert create(strict, admin["token"])["user_id"] == admin["id"]
    allowed = make_probe(USER_PERMISSIONS_FEATURES_API_KEYS="true")
    key = create(allowed, user["token"])["api_key"]
    assert use(allowed, key).status_code == 200
    wait_for(lambda: use(strict, key).status_code != 401)  # once the other instance has synchronised
    assert refused(use(strict, key), 403) == NOT_ALLOWED  # checked at every use, not only at creation


def test_pending_users_cannot_create_keys(make_probe: MakeProbe) -> None:
    probe = make_probe(DEFAULT_USER_ROLE="pending", USER_PERMISSIONS_FEATURES_API_KEYS="true")
    _, pending = people(probe)
    assert refused(probe.post(KEYS, json={}, headers=bearer(pending["token"])), 403) == PENDING
    assert refused(probe.post(OWUI_KEY, headers=bearer(pending["token"])), 403) == PENDING


# --- scopes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("carrier", CARRIERS)
def test_a_restricted_key_is_refused_on_the_same_path_whichever_header_carries_it(
    probe: TestClient, carrier: str
) -> None:
    admin, _ = people(probe)
    key = create(probe, admin["token"], paths=["/ollama/api"], upstreams=["ollama"])["api_key"]
    assert use(probe, key, "/probe/ollama/ollama/api/chat", carrier).status_code == 200
    assert use(probe, key, "/probe/ollama/ollama/api", carrier).status_code == 200
    for path in (
        "/probe/ollama/ollama/apix",  # not on a segment boundary
        "/probe/ollama/ollama/pull",
        "/probe/ollama/ollama/api/%2E%2E/pull",  # decodes to a dot segment
        "/probe/openai/ollama/api/chat",  # another upstream
    ):
        assert refused(use(probe, key, path, carrier), 403) == SCOPE, path


def test_the_site_wide_endpoint_list_applies_to_every_key(make_probe: MakeProbe) -> None:
    probe = make_probe(API_KEYS_ALLOWED_ENDPOINTS="/openai/v1")
    admin, _ = people(probe)
    key = create(probe, admin["token"])["api_key"]
    assert use(probe, key, "/probe/openai/openai/v1/chat/completions").status_code == 200
    for carrier in CARRIERS:
        assert refused(use(probe, key, CHAT, carrier), 403) == SCOPE
    nothing = make_probe(ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS="true")  # on, with an empty list
    assert refused(use(nothing, key, "/probe/openai/openai/v1/chat/completions"), 403) == SCOPE


@pytest.mark.parametrize("carrier", CARRIERS)
def test_keys_cannot_use_wardgates_own_api(probe: TestClient, carrier: str) -> None:
    admin, user = people(probe)
    key = create(probe, admin["token"])["api_key"]
    headers = CARRIERS[carrier](key)
    calls = [
        probe.get(ME, headers=headers),
        probe.post(KEYS, json={}, headers=headers),
        probe.post(OWUI_KEY, headers=headers),
        probe.get(KEYS, headers=headers),
        probe.post(
            "/api/v1/auths/update/password", json={"password": "x", "new_password": "y"}, headers=headers
        ),
        probe.post("/api/v1/auths/sessions/revoke", headers=headers),
        probe.get(USERS, headers=headers),
        probe.post(f"{USERS}{user['id']}/update", json={"role": "admin"}, headers=headers),
        probe.get(ALL_KEYS, headers=headers),
        probe.get(AUDIT, headers=headers),
    ]
    for response in calls:
        assert refused(response, 403) == KEYS_NOT_HERE
    assert refused(probe.get(ME, headers=CARRIERS[carrier]("sk-" + "0" * 64)), 401) == INVALID


def test_custom_api_key_header(make_probe: MakeProbe) -> None:
    probe = make_probe(CUSTOM_API_KEY_HEADER="X-Gateway-Key")
    admin, _ = people(probe)
    key = create(probe, admin["token"])["api_key"]
    response = probe.get(CHAT, headers={"x-gateway-key": key})
    assert response.status_code == 200 and response.json()["via"] == "api-key-header"
    assert refused(probe.get(CHAT, headers={"x-api-key": key}), 401) == "Not authenticated."
    assert refused(probe.get(CHAT, headers={"x-gateway-key": "not-a-key"}), 401) == INVALID


# --- limits ----------------------------------------------------------------------------------------------


def test_per_key_rate_limit(make_probe: MakeProbe) -> None:
    probe = make_probe(API_KEY_RATE_LIMIT="2/1m")
    admin, _ = people(probe)
    first, second = create(probe, admin["token"])["api_key"], create(probe, admin["token"])["api_key"]
    own = create(probe, admin["token"], rate_limit="1/1m")["api_key"]
    assert [use(probe, first, carrier=c).status_code for c in CARRIERS] == [200, 200]
    for carrier in CARRIERS:
        response = use(probe, first, carrier=carrier)
        detail = refused(response, 429)
        assert re.fullmatch(r"Rate limit exceeded for this API key\. Try again in \d+ seconds\.", detail)
        assert int(response.headers["retry-after"]) >= 1
    assert use(probe, second).status_code == 200  # each key has its own budget
    assert use(probe, own).status_code == 200
    assert refused(use(probe, own), 429).startswith("Rate limit exceeded for this API key.")


def test_failed_keys_count_towards_the_failed_authentication_limit(make_probe: MakeProbe) -> None:
    probe = make_probe(AUTH_FAILURE_RATE_LIMIT="2/1m")
    for carrier in CARRIERS:
        assert refused(use(probe, "sk-" + "1" * 64, carrier=carrier), 401) == INVALID
    detail = refused(use(probe, "sk-" + "2" * 64), 429)
    assert re.fullmatch(r"Too many attempts\. Try again in \d+ seconds\.", detail)


# --- administration ---------------------------------------------------------------------------------------


def test_admins_list_and_revoke_anyones_keys(make_probe: MakeProbe) -> None:
    probe = make_probe(USER_PERMISSIONS_FEATURES_API_KEYS="true")
    admin, user = people(probe)
    first = create(probe, user["token"], name="one")
    second = create(probe, user["token"], name="two", paths=["/openai"], rate_limit="10/1m")
    own = create(probe, admin["token"], name="mine")
    listed = probe.get(f"{USERS}{user['id']}/api_keys", headers=bearer(admin["token"]))
    assert listed.status_code == 200
    assert sorted(k["name"] for k in listed.json()) == ["one", "two"]  # newest first; same second here
    assert all(set(k) == INFO_FIELDS for k in listed.json())
    everything = probe.get(ALL_KEYS, headers=bearer(admin["token"])).json()
    assert everything["total"] == 3
    by_id = {k["id"]: k for k in everything["keys"]}
    assert set(by_id) == {first["id"], second["id"], own["id"]}
    assert by_id[second["id"]] == {k: v for k, v in second.items() if k != "api_key"}
    assert by_id[second["id"]]["paths"] == ["/openai"] and by_id[second["id"]]["rate_limit"] == "10/1m"
    revoke = probe.delete(f"{USERS}{user['id']}/api_keys/{first['id']}", headers=bearer(admin["token"]))
    assert revoke.status_code == 200 and revoke.json() is True
    assert refused(use(probe, first["api_key"]), 401) == INVALID
    assert use(probe, second["api_key"], "/probe/openai/openai/chat").status_code == 200
    wrong_owner = probe.delete(
        f"{USERS}{admin['id']}/api_keys/{second['id']}", headers=bearer(admin["token"])
    )
    assert refused(wrong_owner, 404) == NOT_FOUND
    assert refused(probe.get(ALL_KEYS, headers=bearer(user["token"])), 403) == ADMIN_REQUIRED
    assert refused(probe.get(f"{USERS}{admin['id']}/api_keys", headers=bearer(user["token"])), 403) == (
        ADMIN_REQUIRED
    )
    stolen = probe.delete(f"{USERS}{admin['id']}/api_keys/{own['id']}", headers=bearer(user["token"]))
    assert refused(stolen, 403) == ADMIN_REQUIRED


def test_audit_events(probe: TestClient) -> None:
    admin, _ = people(probe)
    created = create(probe, admin["token"])
    assert refused(use(probe, "sk-" + "3" * 64), 401) == INVALID
    probe.delete(f"{KEYS}/{created['id']}", headers=bearer(admin["token"]))

    def events(name: str) -> list[dict[str, Any]]:
        page = probe.get(AUDIT, params={"event": name}, headers=bearer(admin["token"])).json()
        return list(page["events"])

    (made,) = events("api_key.created")
    assert made["outcome"] == "success" and made["actor"] == "ada@example.com"
    assert made["detail"] == f"key={created['id']} prefix={created['prefix']}"
    (revoked,) = events("api_key.revoked")
    assert revoked["detail"] == f"key={created['id']}" and revoked["actor"] == "ada@example.com"
    (refusal,) = events("api_key.refused")
    assert refusal["outcome"] == "refused" and refusal["detail"] == "reason=unknown_api_key"


# --- the full stack: CSRF and OpenAPI ---------------------------------------------------------------------


def test_the_header_that_exempts_a_request_from_csrf_is_the_credential_used(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(**ENABLED)
    admin, _ = people(client)
    key = create(client, admin["token"])["api_key"]
    cookie = {"cookie": f"token={admin['token']}"}
    evil = {"origin": "https://evil.example", **cookie}
    assert refused(client.post(KEYS, json={}, headers=evil), 403) == REFUSAL
    # A header exempts the request from the Origin check, so that header is the credential: the
    # cookie does not ride along, and a key may not create keys.
    assert refused(client.post(KEYS, json={}, headers={**evil, "x-api-key": key}), 403) == KEYS_NOT_HERE
    assert refused(client.post(KEYS, json={}, headers={**evil, "x-api-key": "x"}), 401) == INVALID
    assert client.post(KEYS, json={}, headers={"origin": ORIGIN, **cookie}).status_code == 200


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        OWUI_KEY: {"get", "post", "delete"},
        KEYS: {"get", "post"},
        f"{KEYS}/{{key_id}}": {"delete"},
        ALL_KEYS: {"get"},
        "/api/v1/users/{user_id}/api_keys": {"get"},
        "/api/v1/users/{user_id}/api_keys/{key_id}": {"delete"},
    }
    for path, methods in expected.items():
        assert set(paths[path]) == methods, path
        for operation in paths[path].values():
            assert operation["summary"] and operation["description"]


# --- across instances through Redis, and through the real reverse proxy ---------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_a_revocation_reaches_the_other_instance_through_redis_at_once(make_probe: MakeProbe) -> None:
    redis = {"REDIS_URL": REDIS_URL or "", "REDIS_KEY_PREFIX": f"wg-{uuid.uuid4().hex[:8]}"}
    a = make_probe(**redis, SESSION_SYNC_INTERVAL="30")  # the poll is far away: only the notice can help
    b = make_probe(**redis, SESSION_SYNC_INTERVAL="30")
    for client in (a, b):
        wait_for(
            lambda c=client: (
                c.get("/health", params={"ready": "true"}).json()["revocation_channel"] == "connected"
            )
        )
    admin, _ = people(a)
    created = create(a, admin["token"])
    wait_for(lambda: use(b, created["api_key"]).status_code == 200, timeout=3)
    assert a.delete(f"{KEYS}/{created['id']}", headers=bearer(admin["token"])).json() is True
    wait_for(lambda: use(b, created["api_key"]).status_code == 401, timeout=3)
    assert refused(use(b, created["api_key"]), 401) == INVALID


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The fake Ollama/OpenAI/app server of tests/fakes as its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", str(port)],
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), timeout=20)
        yield base
    finally:
        stop(process)


def _answers(base: str) -> bool:
    try:
        httpx.get(f"{base}/state", timeout=1)
    except httpx.HTTPError:
        return False
    return True


@pytest.mark.parametrize("carrier", CARRIERS)
def test_keys_through_the_reverse_proxy(
    make_client: Callable[..., TestClient], upstream: str, carrier: str
) -> None:
    client = make_client(**ENABLED, OLLAMA_BASE_URL=upstream, UPSTREAM_URL=upstream)
    admin, _ = people(client)
    key = create(client, admin["token"], paths=["/ollama/api"])["api_key"]
    seen = client.get("/ollama/api/version", headers=CARRIERS[carrier](key))
    assert seen.status_code == 200, seen.text
    facts = seen.json()
    assert facts["path"] == "/api/version" and facts["identity"]["x-forwarded-email"] == "ada@example.com"
    assert facts["authorization_present"] is False and facts["x_api_key_present"] is False  # never upstream
    assert refused(client.get("/ollama/version", headers=CARRIERS[carrier](key)), 403) == SCOPE
    assert refused(client.get("/elsewhere", headers=CARRIERS[carrier](key)), 403) == SCOPE
