"""User administration (/api/v1/users), the public endpoints and the OpenAPI document, over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient
from tests.conftest import PASSWORD, bearer, refused, signin, signup

from wardgate import __version__
from wardgate.identity.rules import ACCOUNT_DISABLED, INVALID_CREDENTIALS

USERS = "/api/v1/users/"
ME = "/api/v1/auths/"
SIGNIN = "/api/v1/auths/signin"
ENDED = "This session has ended. Please sign in again."
ADMIN_REQUIRED = "Administrator access is required."
NOT_AUTHENTICATED = "Not authenticated."
NOT_FOUND = "User not found."
LAST_ADMIN = "The last administrator cannot be demoted, disabled or deleted."
USER_KEYS = {
    "id",
    "email",
    "name",
    "role",
    "active",
    "profile_image_url",
    "created_at",
    "updated_at",
    "last_active_at",
    "allowed_models",
    "token_budget",
    "mfa_enabled",
}
NOT_UUIDS = ["not-a-uuid", "1", "1 OR 1=1", "%27%3B--", "x" * 300]

MakeClient = Callable[..., TestClient]


class Site:
    """An instance with an admin and a user (DEFAULT_USER_ROLE=user), each with a token."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.admin = signup(client, "admin@example.com", name="Admin")
        self.user = signup(client, "bob@example.com", name="Bob")

    def as_admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request with the admin's token."""
        return self.client.request(method, path, headers=bearer(self.admin["token"]), **kwargs)

    def update(self, user_id: str, changes: dict[str, Any]) -> Any:
        """POST /api/v1/users/{id}/update as the admin."""
        return self.as_admin("POST", f"{USERS}{user_id}/update", json=changes)

    def status(self, token: str) -> int:
        """The status of GET /api/v1/auths/ with this token."""
        return self.client.get(ME, headers=bearer(token)).status_code


@pytest.fixture
def site(make_client: MakeClient) -> Site:
    return Site(make_client(DEFAULT_USER_ROLE="user", SIGNUP_RATE_LIMIT="100/1h"))


# --- listing and reading ---------------------------------------------------------------------------


def test_list_users_shape(site: Site) -> None:
    response = site.as_admin("GET", USERS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"users", "total", "next_cursor"}
    assert body["next_cursor"] is None
    assert body["total"] == 2
    assert sorted(u["email"] for u in body["users"]) == ["admin@example.com", "bob@example.com"]
    for user in body["users"]:
        assert set(user) == USER_KEYS  # never a password hash or a session stamp
        assert uuid.UUID(user["id"])
        assert user["active"] is True
    assert "password" not in response.text and "stamp" not in response.text


def test_list_users_pages(site: Site) -> None:
    for i in range(3):
        signup(site.client, f"user{i}@example.com", name=f"User {i}")

    def page(number: int) -> list[str]:
        body = site.as_admin("GET", USERS, params={"page": number, "limit": 2}).json()
        assert body["total"] == 5
        return [u["email"] for u in body["users"]]

    pages = [page(1), page(2), page(3), page(4)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert len({e for p in pages for e in p}) == 5


@pytest.mark.parametrize(
    ("query", "emails"),
    [
        ("bob", ["bob@example.com"]),
        ("BOB", ["bob@example.com"]),  # case-insensitive
        ("Carol Smith", ["carol@example.com"]),  # by name
        ("car", ["carol@example.com"]),  # the beginning of either
        ("carol@example.com", ["carol@example.com"]),
        ("example.com", []),  # the beginning, not anywhere inside: an index range, not a scan
        ("smith", []),
        ("%", []),  # LIKE wildcards are literal
        ("_", []),
        ("nobody", []),
    ],
)
def test_list_users_filters_by_name_or_email(site: Site, query: str, emails: list[str]) -> None:
    signup(site.client, "carol@example.com", name="Carol Smith")
    body = site.as_admin("GET", USERS, params={"query": query}).json()
    assert sorted(u["email"] for u in body["users"]) == emails
    assert body["total"] == len(emails)


@pytest.mark.parametrize("params", [{"page": 0}, {"limit": 0}, {"limit": 501}, {"page": "x"}])
def test_list_users_refuses_bad_paging(site: Site, params: dict[str, Any]) -> None:
    response = site.as_admin("GET", USERS, params=params)
    assert response.status_code == 422
    assert set(response.json()) == {"detail"}


def test_get_one_user(site: Site) -> None:
    response = site.as_admin("GET", f"{USERS}{site.user['id']}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_KEYS
    assert (body["id"], body["email"], body["name"], body["role"]) == (
        site.user["id"],
        "bob@example.com",
        "Bob",
        "user",
    )
    assert site.as_admin("GET", f"{USERS}{site.user['id'].upper()}").json()["id"] == site.user["id"]


# --- updating --------------------------------------------------------------------------------------


def test_update_role_and_name(site: Site) -> None:
    response = site.update(site.user["id"], {"role": "admin", "name": "  Robert   Tables "})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == USER_KEYS
    assert (body["role"], body["name"]) == ("admin", "Robert Tables")
    assert site.client.get(ME, headers=bearer(site.user["token"])).json()["role"] == "admin"
    assert site.update(site.user["id"], {}).json()["role"] == "admin"  # absent fields stay as they are


@pytest.mark.parametrize("role", ["root", "ADMIN", "", "superuser"])
def test_update_refuses_an_unknown_role(site: Site, role: str) -> None:
    response = site.update(site.user["id"], {"role": role})
    assert response.status_code == 422
    problems = response.json()["detail"]
    assert [p["loc"] for p in problems] == [["body", "role"]]
    assert all(set(p) == {"loc", "msg", "type"} for p in problems)  # the submitted value is not echoed
    assert site.client.get(ME, headers=bearer(site.user["token"])).json()["role"] == "user"


@pytest.mark.parametrize("name", ["", "   ", "x" * 256])
def test_update_refuses_a_bad_name(site: Site, name: str) -> None:
    response = site.update(site.user["id"], {"name": name})
    assert response.status_code in (400, 422)
    assert set(response.json()) == {"detail"}
    assert site.as_admin("GET", f"{USERS}{site.user['id']}").json()["name"] == "Bob"


def test_update_email(site: Site) -> None:
    response = site.update(site.user["id"], {"email": "  Robert@Example.COM "})
    assert response.status_code == 200 and response.json()["email"] == "robert@example.com"
    signin(site.client, "robert@example.com")
    old = site.client.post(SIGNIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(old, 400) == INVALID_CREDENTIALS


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("admin@example.com", "This email is already registered."),
        ("ADMIN@Example.com", "This email is already registered."),
        ("not-an-email", "Invalid email format. Please enter a valid email address."),
    ],
)
def test_update_refuses_a_taken_or_invalid_email(site: Site, email: str, message: str) -> None:
    assert refused(site.update(site.user["id"], {"email": email}), 400) == message
    assert site.as_admin("GET", f"{USERS}{site.user['id']}").json()["email"] == "bob@example.com"


def test_admin_password_reset_ends_the_users_sessions(site: Site) -> None:
    other = signin(site.client, "bob@example.com")["token"]
    response = site.update(site.user["id"], {"password": "a-new-password-123"})
    assert response.status_code == 200
    for token in (site.user["token"], other):
        assert refused(site.client.get(ME, headers=bearer(token)), 401) == ENDED
    old = site.client.post(SIGNIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(old, 400) == INVALID_CREDENTIALS
    signin(site.client, "bob@example.com", "a-new-password-123")
    assert site.status(site.admin["token"]) == 200


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "Password must be at least 8 characters long."),
        ("x" * 1025, "Password is too long (at most 1024 bytes)."),
    ],
)
def test_admin_password_reset_applies_the_password_rules(site: Site, password: str, message: str) -> None:
    assert refused(site.update(site.user["id"], {"password": password}), 400) == message
    assert site.status(site.user["token"]) == 200
    signin(site.client, "bob@example.com")


def test_disabling_ends_sessions_and_enabling_does_not_revive_them(site: Site) -> None:
    response = site.update(site.user["id"], {"active": False})
    assert response.status_code == 200 and response.json()["active"] is False
    assert refused(site.client.get(ME, headers=bearer(site.user["token"])), 401) == ENDED
    blocked = site.client.post(SIGNIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(blocked, 403) == ACCOUNT_DISABLED
    assert site.update(site.user["id"], {"active": True}).json()["active"] is True
    assert site.status(site.user["token"]) == 401  # the old token stays dead
    assert site.status(signin(site.client, "bob@example.com")["token"]) == 200


# --- deleting --------------------------------------------------------------------------------------


def test_delete_user_ends_their_sessions(site: Site) -> None:
    response = site.as_admin("DELETE", f"{USERS}{site.user['id']}")
    assert response.status_code == 200 and response.json() is True
    assert refused(site.client.get(ME, headers=bearer(site.user["token"])), 401) == ENDED
    gone = site.client.post(SIGNIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(gone, 400) == INVALID_CREDENTIALS
    assert refused(site.as_admin("GET", f"{USERS}{site.user['id']}"), 404) == NOT_FOUND
    assert site.as_admin("GET", USERS).json()["total"] == 1
    assert refused(site.as_admin("DELETE", f"{USERS}{site.user['id']}"), 404) == NOT_FOUND
    signup(site.client, "bob@example.com")  # the address is free again


def test_admin_cannot_delete_themself(site: Site) -> None:
    response = site.as_admin("DELETE", f"{USERS}{site.admin['id']}")
    assert refused(response, 400) == "You cannot delete your own account."
    assert site.status(site.admin["token"]) == 200


# --- the last admin --------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [{"role": "user"}, {"role": "pending"}, {"active": False}])
def test_the_last_admin_cannot_be_demoted_or_disabled(site: Site, changes: dict[str, Any]) -> None:
    assert refused(site.update(site.admin["id"], changes), 400) == LAST_ADMIN
    me = site.client.get(ME, headers=bearer(site.admin["token"]))
    assert me.status_code == 200 and me.json()["role"] == "admin"


@pytest.mark.parametrize("changes", [{"role": "user"}, {"role": "pending"}, {"active": False}])
def test_an_admin_can_step_down_when_another_admin_exists(site: Site, changes: dict[str, Any]) -> None:
    assert site.update(site.user["id"], {"role": "admin"}).status_code == 200
    assert site.update(site.admin["id"], changes).status_code == 200
    step_down = site.client.get(USERS, headers=bearer(site.admin["token"]))
    assert step_down.status_code == (401 if "active" in changes else 403)
    # The remaining admin may now delete the former one.
    deleted = site.client.delete(f"{USERS}{site.admin['id']}", headers=bearer(site.user["token"]))
    assert deleted.status_code == 200


def test_an_admin_may_delete_another_admin(site: Site) -> None:
    assert site.update(site.user["id"], {"role": "admin"}).status_code == 200
    assert site.as_admin("DELETE", f"{USERS}{site.user['id']}").status_code == 200
    assert refused(site.update(site.admin["id"], {"role": "user"}), 400) == LAST_ADMIN


def test_a_disabled_admin_does_not_count(site: Site) -> None:
    assert site.update(site.user["id"], {"role": "admin"}).status_code == 200
    assert site.update(site.user["id"], {"active": False}).status_code == 200
    assert refused(site.update(site.admin["id"], {"role": "user"}), 400) == LAST_ADMIN


# --- admin "revoke sessions" -----------------------------------------------------------------------


def test_admin_revokes_every_session_of_a_user(site: Site) -> None:
    other = signin(site.client, "bob@example.com")["token"]
    response = site.as_admin("POST", f"{USERS}{site.user['id']}/sessions/revoke")
    assert response.status_code == 200 and response.json() is True
    for token in (site.user["token"], other):
        assert refused(site.client.get(ME, headers=bearer(token)), 401) == ENDED
    assert site.status(site.admin["token"]) == 200
    assert site.status(signin(site.client, "bob@example.com")["token"]) == 200


# --- who may call, and ids that are not there ------------------------------------------------------

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", USERS, None),
    ("GET", USERS + "{id}", None),
    ("POST", USERS + "{id}/update", {"role": "admin"}),
    ("DELETE", USERS + "{id}", None),
    ("POST", USERS + "{id}/sessions/revoke", None),
    ("POST", "/api/v1/auths/add", {"name": "Eve", "email": "eve@example.com", "password": PASSWORD}),
]


def _unchanged(site: Site) -> None:
    body = site.as_admin("GET", f"{USERS}{site.admin['id']}").json()
    assert (body["role"], body["active"]) == ("admin", True)
    assert site.status(site.admin["token"]) == 200
    assert site.as_admin("GET", USERS).json()["total"] == 2


@pytest.mark.parametrize("role", ["user", "pending"])
def test_non_admins_are_refused_on_every_route(site: Site, role: str) -> None:
    if role != "user":
        assert site.update(site.user["id"], {"role": role}).status_code == 200
    for method, path, body in ROUTES:
        url = path.format(id=site.admin["id"])
        response = site.client.request(method, url, json=body, headers=bearer(site.user["token"]))
        assert refused(response, 403) == ADMIN_REQUIRED, (method, path)
    _unchanged(site)


@pytest.mark.parametrize(
    "credential",
    [{}, bearer("garbage"), {"Cookie": "token=garbage"}],
    ids=["none", "bad-bearer", "bad-cookie"],
)
def test_unauthenticated_callers_are_refused_on_every_route(site: Site, credential: dict[str, str]) -> None:
    for method, path, body in ROUTES:
        response = site.client.request(
            method, path.format(id=site.admin["id"]), json=body, headers=credential
        )
        assert refused(response, 401) in (NOT_AUTHENTICATED, "Invalid or expired session token."), (
            method,
            path,
        )
    _unchanged(site)


def test_unknown_and_malformed_ids_are_404_on_every_route(site: Site) -> None:
    for user_id in [str(uuid.uuid4()), *NOT_UUIDS]:
        for method, path, body in ROUTES:
            if "{id}" in path:
                response = site.as_admin(method, path.format(id=user_id), json=body)
                assert refused(response, 404) == NOT_FOUND, (method, path, user_id)
    _unchanged(site)


# --- public endpoints ------------------------------------------------------------------------------


def test_config_is_public_and_shows_onboarding_until_the_first_account(client: TestClient) -> None:
    before = client.get("/api/config")
    assert before.status_code == 200
    body = before.json()
    assert body["onboarding"] is True
    assert (body["status"], body["name"], body["version"]) == (True, "wardgate", __version__)
    assert body["features"] == {
        "auth": True,
        "auth_trusted_header": False,
        "enable_ldap": False,
        "enable_api_key": False,
        "enable_signup": True,
        "enable_login_form": True,
        "enable_password_auth": True,
    }
    signup(client, "admin@example.com")
    after = client.get("/api/config", headers=bearer("garbage"))  # public: a bad credential is no matter
    assert after.status_code == 200
    assert "onboarding" not in after.json()


@pytest.mark.parametrize(
    ("configured", "signup_enabled"),
    [
        ({"ENABLE_SIGNUP": "false"}, False),
        ({"ENABLE_LOGIN_FORM": "false"}, False),
        ({"ENABLE_PASSWORD_AUTH": "false"}, False),
        ({"ENABLE_SIGNUP": "TRUE"}, True),
    ],
)
def test_config_reflects_the_signup_settings(
    make_client: MakeClient, configured: dict[str, str], signup_enabled: bool
) -> None:
    features = make_client(**configured, WEBUI_NAME="Team Chat").get("/api/config").json()
    assert features["name"] == "Team Chat"
    assert features["features"]["enable_signup"] is signup_enabled
    if "ENABLE_LOGIN_FORM" in configured:
        assert features["features"]["enable_login_form"] is False
    if "ENABLE_PASSWORD_AUTH" in configured:
        assert features["features"]["enable_password_auth"] is False


def test_health(client: TestClient) -> None:
    live = client.get("/health")
    assert live.status_code == 200 and live.json()["status"] is True
    ready = client.get("/health", params={"ready": "true"})
    assert ready.status_code == 200
    assert ready.json() == {
        "status": True,
        "database": "ok",
        "sessions": "synchronised",
        "rate_limits": "memory",
        "revocation_channel": "not configured",
    }


# --- the OpenAPI document --------------------------------------------------------------------------

PROTECTED = {
    ("get", "/api/v1/auths/"),
    ("post", "/api/v1/auths/update/password"),
    ("post", "/api/v1/auths/add"),
    ("get", "/api/v1/auths/sessions"),
    ("delete", "/api/v1/auths/sessions/{session_id}"),
    ("post", "/api/v1/auths/sessions/revoke"),
    ("get", "/api/v1/users/"),
    ("get", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/users/{user_id}/update"),
    ("delete", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/users/{user_id}/sessions/revoke"),
}
OPEN = {
    ("post", "/api/v1/auths/signin"),
    ("post", "/api/v1/auths/signup"),
    ("get", "/api/v1/auths/signout"),
    ("post", "/api/v1/auths/signout"),
    ("get", "/api/config"),
    ("get", "/health"),
}


def test_openapi_lists_every_route_with_its_401_and_403_responses(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    routes = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes >= PROTECTED | OPEN
    error_body = {"$ref": "#/components/schemas/ErrorBody"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["detail"]
    api = {(method, path) for method, path in routes if path.startswith("/api/v1/")}
    assert api >= PROTECTED
    for method, path in api - OPEN:  # every other API route, including ones added later
        responses = document["paths"][path][method]["responses"]
        for status in ("401", "403"):
            assert status in responses, (method, path, status)
            assert responses[status]["content"]["application/json"]["schema"] == error_body
    paths = document["paths"]
    assert {"400", "403", "429"} <= set(paths["/api/v1/auths/signin"]["post"]["responses"])
    assert {"400", "403", "429"} <= set(paths["/api/v1/auths/signup"]["post"]["responses"])
    assert "403" in paths["/api/v1/auths/signout"]["get"]["responses"]  # a cross-site sign-out
