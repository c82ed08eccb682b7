"""The auth API over HTTP (/api/v1/auths): every route, every refusal, on Open WebUI's paths and shapes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import jwt
import pytest
from argon2 import PasswordHasher as Argon2Hasher
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient
from tests.conftest import ORIGIN, PASSWORD, SECRET, bearer, refused, signin, signup
from tests.mfa.conftest import gateway_of

from wardgate.app import create_app
from wardgate.config import Settings, load_settings
from wardgate.gateway import Gateway
from wardgate.http.application import build_routes
from wardgate.http.deps import VerifiedUser
from wardgate.http.relay.dispatch import NUL_REFUSED
from wardgate.identity.rules import ACCOUNT_DISABLED, INVALID_CREDENTIALS
from wardgate.storage import db, schema
from wardgate.storage.models import AuditEvent, AuthChange, User

ME = "/api/v1/auths/"
SIGNUP = "/api/v1/auths/signup"
SIGNIN = "/api/v1/auths/signin"
SIGNOUT = "/api/v1/auths/signout"
PASSWORD_CHANGE = "/api/v1/auths/update/password"
ADD = "/api/v1/auths/add"
SESSIONS = "/api/v1/auths/sessions"
REVOKE_ALL = "/api/v1/auths/sessions/revoke"
USERS = "/api/v1/users/"

ENDED = "This session has ended. Please sign in again."
INVALID_TOKEN = "Invalid or expired session token."
EXPIRED = "This session has expired. Please sign in again."  # authentic, just old
NOT_AUTHENTICATED = "Not authenticated."
BAD_SCHEME = "Unsupported authorization header; use 'Bearer <token>'."
ADMIN_REQUIRED = "Administrator access is required."
TOO_LONG = "Password is too long (at most 1024 bytes)."
SESSION_USER_KEYS = {
    "token",
    "token_type",
    "expires_at",
    "id",
    "email",
    "name",
    "role",
    "profile_image_url",
    "permissions",
}
# Attempts beyond the default brute-force limits, for tests that sign in or up many times on purpose.
GENEROUS_LIMITS = {
    "SIGNUP_RATE_LIMIT": "1000/1h",
    "SIGNIN_RATE_LIMIT": "1000/1m",
    "SIGNIN_IP_RATE_LIMIT": "1000/1m",
}

MakeClient = Callable[..., TestClient]


def token_cookie(response: httpx.Response) -> Morsel[str]:
    """The one `token` cookie a response sets."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers[0])
    return jar["token"]


def cookie(token: str) -> dict[str, str]:
    """The session cookie as a browser would send it."""
    return {"Cookie": f"token={token}"}


def user_and_admin(client: TestClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """An admin (first account) and a second account, which gets DEFAULT_USER_ROLE."""
    admin = signup(client, "admin@example.com", name="Admin")
    user = signup(client, "bob@example.com", name="Bob")
    return user, admin


# --- sign-up ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "expected"), [({}, "pending"), ({"DEFAULT_USER_ROLE": "user"}, "user")]
)
def test_first_account_is_admin_and_later_ones_get_the_default_role(
    make_client: MakeClient, configured: dict[str, str], expected: str
) -> None:
    client = make_client(**configured)
    first = signup(client, "Admin@Example.com", name="Admin")
    second = signup(client, "bob@example.com", name="Bob")
    assert (first["role"], second["role"]) == ("admin", expected)
    assert first["email"] == "admin@example.com"
    assert set(first) == set(second) == SESSION_USER_KEYS
    assert client.get(ME, headers=bearer(second["token"])).json()["role"] == expected


def test_signup_sets_the_session_cookie(client: TestClient) -> None:
    response = client.post(SIGNUP, json={"name": "A", "email": "a@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert token_cookie(response).value == response.json()["token"]
    assert response.headers["cache-control"] == "no-store"


def test_disabled_signup_still_lets_the_first_account_in(make_client: MakeClient) -> None:
    client = make_client(ENABLE_SIGNUP="false")
    first = signup(client, "admin@example.com")
    assert first["role"] == "admin"
    admin = first["token"]
    second = client.post(SIGNUP, json={"name": "B", "email": "bob@example.com", "password": PASSWORD})
    assert refused(second, 403) == "Sign-up is disabled on this site."
    # An already registered email gets the same refusal: the closed door reveals no accounts.
    again = client.post(SIGNUP, json={"name": "A", "email": "admin@example.com", "password": PASSWORD})
    assert refused(again, 403) == "Sign-up is disabled on this site."
    # Closed sign-up does not stop an admin from adding accounts.
    added = client.post(
        ADD, json={"name": "B", "email": "bob@example.com", "password": PASSWORD}, headers=bearer(admin)
    )
    assert added.status_code == 200


def test_admin_from_the_environment_is_created_once(make_settings: Callable[..., Settings]) -> None:
    env = {
        "WEBUI_ADMIN_EMAIL": "Root@Example.com",
        "WEBUI_ADMIN_PASSWORD": "bootstrap-password",
        "WEBUI_ADMIN_NAME": "Root",
    }
    with TestClient(create_app(make_settings(**env)), headers={"origin": ORIGIN}) as first:
        assert "onboarding" not in first.get("/api/config").json()
        body = signin(first, "root@example.com", "bootstrap-password")
        assert (body["role"], body["name"]) == ("admin", "Root")
        assert signup(first, "bob@example.com")["role"] == "pending"  # the first sign-up is no longer first
    changed = {**env, "WEBUI_ADMIN_PASSWORD": "another-password"}
    with TestClient(create_app(make_settings(**changed)), headers={"origin": ORIGIN}) as second:
        signin(second, "root@example.com", "bootstrap-password")  # an existing database is never overwritten
        refused_signin = second.post(
            SIGNIN, json={"email": "root@example.com", "password": "another-password"}
        )
        assert refused(refused_signin, 400) == INVALID_CREDENTIALS


def test_duplicate_email_is_refused_whatever_its_case(client: TestClient) -> None:
    signup(client, "ann@example.com")
    for email in ("ann@example.com", "ANN@Example.COM", "  ann@example.com  "):
        response = client.post(SIGNUP, json={"name": "Ann", "email": email, "password": PASSWORD})
        assert refused(response, 400) == "This email is already registered.", email


def test_invalid_email_is_refused(client: TestClient) -> None:
    for email in ("", "not-an-email", "ann@", "@example.com", "ann smith@example.com", "ann@@example.com"):
        response = client.post(SIGNUP, json={"name": "Ann", "email": email, "password": PASSWORD})
        assert refused(response, 400) == "Invalid email format. Please enter a valid email address.", email
    assert client.get("/api/config").json()["onboarding"] is True  # nothing was created


def test_invalid_name_is_refused(client: TestClient) -> None:
    for name in ("", "   ", "bad\x00name", "\x1b[31mred"):
        response = client.post(SIGNUP, json={"name": name, "email": "ann@example.com", "password": PASSWORD})
        assert refused(response, 400) == "Name must be 1 to 255 printable characters.", repr(name)
    too_long = client.post(SIGNUP, json={"name": "x" * 256, "email": "ann@example.com", "password": PASSWORD})
    assert too_long.status_code == 422 and set(too_long.json()) == {"detail"}
    assert client.get("/api/config").json()["onboarding"] is True


def test_short_password_is_refused(client: TestClient) -> None:
    response = client.post(SIGNUP, json={"name": "Ann", "email": "ann@example.com", "password": "seven77"})
    assert refused(response, 400) == "Password must be at least 8 characters long."


@pytest.mark.parametrize("password", ["x" * 1025, "é" * 513], ids=["1025-ascii", "1026-bytes-in-513-chars"])
def test_password_over_1024_bytes_is_refused_not_truncated(client: TestClient, password: str) -> None:
    response = client.post(SIGNUP, json={"name": "Ann", "email": "ann@example.com", "password": password})
    assert refused(response, 400) == TOO_LONG


def test_a_1024_byte_password_is_used_whole(client: TestClient) -> None:
    password = "p" * 1023 + "!"
    signup(client, "ann@example.com", password=password)
    signin(client, "ann@example.com", password)
    # bcrypt would have ignored everything past byte 72; wardgate checks every byte.
    for wrong in ("p" * 1023 + "?", "p" * 72):
        response = client.post(SIGNIN, json={"email": "ann@example.com", "password": wrong})
        assert refused(response, 400) == INVALID_CREDENTIALS


@pytest.mark.parametrize(
    ("configured", "message"),
    [
        (
            {"PASSWORD_VALIDATION_HINT": "Use upper, lower, digit and symbol."},
            "Use upper, lower, digit and symbol.",
        ),
        ({}, "Password does not meet the password policy of this site."),
    ],
)
def test_password_policy_refuses_with_the_configured_hint(
    make_client: MakeClient, configured: dict[str, str], message: str
) -> None:
    client = make_client(ENABLE_PASSWORD_VALIDATION="true", **configured)
    weak = client.post(SIGNUP, json={"name": "A", "email": "a@example.com", "password": "alllowercase1"})
    assert refused(weak, 400) == message
    assert signup(client, "a@example.com", password="Str0ng!pass")["role"] == "admin"


def test_custom_password_pattern(make_client: MakeClient) -> None:
    client = make_client(
        ENABLE_PASSWORD_VALIDATION="true",
        PASSWORD_VALIDATION_REGEX_PATTERN=r"^(?=.*\d).{10,}$",
        PASSWORD_VALIDATION_HINT="At least 10 characters including a digit.",
    )
    weak = client.post(SIGNUP, json={"name": "A", "email": "a@example.com", "password": "no-digits-here"})
    assert refused(weak, 400) == "At least 10 characters including a digit."
    signup(client, "a@example.com", password="digits-1234")


def test_password_policy_is_off_by_default(client: TestClient) -> None:
    signup(client, "a@example.com", password="alllowercase")


# --- sign-in ---------------------------------------------------------------------------------------


def test_signin_returns_the_open_webui_session_shape(make_client: MakeClient) -> None:
    client = make_client(JWT_EXPIRES_IN="1h")
    created = signup(client, "ann@example.com", name="Ann")
    before = int(time.time())
    response = client.post(SIGNIN, json={"email": " ANN@example.com ", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == SESSION_USER_KEYS
    assert body["token_type"] == "Bearer"
    assert (body["id"], body["email"], body["name"], body["role"]) == (
        created["id"],
        "ann@example.com",
        "Ann",
        "admin",
    )
    assert body["profile_image_url"] == "/user.png"
    assert body["permissions"] == {}
    assert before + 3600 <= body["expires_at"] <= int(time.time()) + 3600
    assert body["token"] != created["token"]  # a new session, not the sign-up one
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["token"], SECRET, algorithms=["HS256"])
    assert claims["id"] == body["id"] and claims["typ"] == "session" and claims["exp"] == body["expires_at"]


def test_signin_cookie_is_httponly_lax_and_lives_as_long_as_the_token(make_client: MakeClient) -> None:
    client = make_client(JWT_EXPIRES_IN="1h")
    signup(client, "ann@example.com")
    response = client.post(SIGNIN, json={"email": "ann@example.com", "password": PASSWORD})
    morsel = token_cookie(response)
    assert morsel.value == response.json()["token"]
    assert morsel["httponly"] is True
    assert morsel["path"] == "/"
    assert morsel["samesite"].lower() == "lax"
    assert 3599 <= int(morsel["max-age"]) <= 3600
    assert not morsel["secure"]  # plain http and WEBUI_AUTH_COOKIE_SECURE unset
    assert not morsel["domain"]


def test_a_token_that_never_expires_gets_a_browser_session_cookie(make_client: MakeClient) -> None:
    client = make_client(JWT_EXPIRES_IN="-1")
    signup(client, "ann@example.com")
    response = client.post(SIGNIN, json={"email": "ann@example.com", "password": PASSWORD})
    assert response.json()["expires_at"] is None
    morsel = token_cookie(response)
    assert not morsel["max-age"] and not morsel["expires"]
    assert "exp" not in jwt.decode(response.json()["token"], SECRET, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("base_url", "configured", "secure"),
    [
        ("http://testserver", {}, False),
        ("https://testserver", {}, True),
        ("http://testserver", {"WEBUI_AUTH_COOKIE_SECURE": "true"}, True),
        ("http://testserver", {"WEBUI_SESSION_COOKIE_SECURE": "true"}, True),
        ("https://testserver", {"WEBUI_AUTH_COOKIE_SECURE": "false"}, False),
    ],
)
def test_secure_flag_follows_configuration_then_scheme(
    make_client: MakeClient, base_url: str, configured: dict[str, str], secure: bool
) -> None:
    client = make_client(base_url=base_url, **configured)
    signup(client, "ann@example.com")
    response = client.post(SIGNIN, json={"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 200
    assert bool(token_cookie(response)["secure"]) is secure


@pytest.mark.parametrize(
    ("configured", "same_site"),
    [
        ({"WEBUI_AUTH_COOKIE_SAME_SITE": "strict"}, "strict"),
        ({"WEBUI_SESSION_COOKIE_SAME_SITE": "strict"}, "strict"),
        ({"WEBUI_SESSION_COOKIE_SAME_SITE": "strict", "WEBUI_AUTH_COOKIE_SAME_SITE": "lax"}, "lax"),
    ],
)
def test_same_site_follows_configuration(
    make_client: MakeClient, configured: dict[str, str], same_site: str
) -> None:
    client = make_client(**configured)
    signup(client, "ann@example.com")
    response = client.post(SIGNIN, json={"email": "ann@example.com", "password": PASSWORD})
    assert token_cookie(response)["samesite"].lower() == same_site


def test_unknown_email_and_wrong_password_are_indistinguishable(make_client: MakeClient) -> None:
    client = make_client(**GENEROUS_LIMITS)
    signup(client, "ann@example.com")
    unknown = {"email": "nobody@example.com", "password": PASSWORD}
    wrong = {"email": "ann@example.com", "password": "not-the-password"}
    malformed = {"email": "not an email", "password": PASSWORD}
    bodies = {refused(client.post(SIGNIN, json=form), 400) for form in (unknown, wrong, malformed)}
    assert bodies == {INVALID_CREDENTIALS}

    def elapsed(form: dict[str, str]) -> float:
        started = time.perf_counter()
        assert client.post(SIGNIN, json=form).status_code == 400
        return time.perf_counter() - started

    timings: dict[str, list[float]] = {"unknown": [], "wrong": []}
    for _ in range(9):  # interleaved, so drift in machine load hits both alike
        timings["unknown"].append(elapsed(unknown))
        timings["wrong"].append(elapsed(wrong))
    ratio = statistics.median(timings["unknown"]) / statistics.median(timings["wrong"])
    assert 0.5 <= ratio <= 2.0, timings


def test_password_signin_can_be_switched_off(make_client: MakeClient) -> None:
    client = make_client(ENABLE_PASSWORD_AUTH="false")
    signup(client, "admin@example.com")
    response = client.post(SIGNIN, json={"email": "admin@example.com", "password": PASSWORD})
    assert refused(response, 403) == "Password sign-in is disabled on this site."
    assert not response.headers.get_list("set-cookie")


def test_disabled_account_cannot_sign_in(make_client: MakeClient) -> None:
    client = make_client(DEFAULT_USER_ROLE="user")
    user, admin = user_and_admin(client)
    disabled = client.post(
        f"{USERS}{user['id']}/update", json={"active": False}, headers=bearer(admin["token"])
    )
    assert disabled.status_code == 200
    response = client.post(SIGNIN, json={"email": "bob@example.com", "password": PASSWORD})
    assert refused(response, 403) == ACCOUNT_DISABLED
    assert not response.headers.get_list("set-cookie")
    # Without the right password a disabled account looks like any other failure.
    wrong = client.post(SIGNIN, json={"email": "bob@example.com", "password": "not-the-password"})
    assert refused(wrong, 400) == INVALID_CREDENTIALS


@pytest.mark.parametrize(
    "form", [{"email": "a@example.com"}, {"password": PASSWORD}, {"email": 1, "password": PASSWORD}, []]
)
def test_malformed_signin_bodies_are_refused_with_422(client: TestClient, form: object) -> None:
    response = client.post(SIGNIN, json=form)
    assert response.status_code == 422
    assert set(response.json()) == {"detail"}


# --- pending accounts ------------------------------------------------------------------------------


@pytest.fixture
def probe(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """wardgate's routes plus one that only verified users reach (the API has none of its own yet)."""
    app = build_routes(Gateway.build(make_settings()))

    async def verified(principal: VerifiedUser) -> dict[str, str]:
        return {"role": principal.user.role}

    app.add_api_route("/probe/verified", verified, methods=["GET"])
    app.router.routes.insert(0, app.router.routes.pop())  # ahead of the reverse proxy's catch-all

    with TestClient(app, headers={"origin": ORIGIN}) as client:
        yield client


def test_pending_user_reaches_only_their_own_session(probe: TestClient) -> None:
    user, admin = user_and_admin(probe)
    assert user["role"] == "pending"
    token = signin(probe, "bob@example.com")["token"]
    me = probe.get(ME, headers=bearer(token))
    assert me.status_code == 200 and me.json()["role"] == "pending"
    sessions = probe.get(SESSIONS, headers=bearer(token))
    assert sessions.status_code == 200 and len(sessions.json()) == 2
    assert refused(probe.get("/probe/verified", headers=bearer(token)), 403) == (
        "Your account is pending approval by an administrator."
    )
    assert refused(probe.get(USERS, headers=bearer(token)), 403) == ADMIN_REQUIRED
    new = {"name": "Eve", "email": "eve@example.com", "password": PASSWORD}
    assert refused(probe.post(ADD, json=new, headers=bearer(token)), 403) == ADMIN_REQUIRED
    assert probe.get("/probe/verified", headers=bearer(admin["token"])).json() == {"role": "admin"}


# --- the session user ------------------------------------------------------------------------------


def test_session_user_echoes_the_token_only_to_header_callers(client: TestClient) -> None:
    body = signup(client, "ann@example.com", name="Ann")
    by_header = client.get(ME, headers=bearer(body["token"]))
    assert by_header.status_code == 200
    assert by_header.json() == {**body, "token": body["token"]}
    assert by_header.headers["cache-control"] == "no-store"
    by_cookie = client.get(ME, headers=cookie(body["token"]))
    assert by_cookie.status_code == 200
    assert by_cookie.json() == {**body, "token": ""}


def test_session_user_needs_a_credential(client: TestClient) -> None:
    signup(client, "ann@example.com")
    assert refused(client.get(ME), 401) == NOT_AUTHENTICATED


def test_the_header_wins_over_the_cookie(client: TestClient) -> None:
    admin, user = signup(client, "admin@example.com"), signup(client, "bob@example.com")
    response = client.get(ME, headers={**bearer(user["token"]), **cookie(admin["token"])})
    assert response.json()["id"] == user["id"]
    broken = client.get(ME, headers={**bearer("garbage"), **cookie(admin["token"])})
    assert refused(broken, 401) == INVALID_TOKEN


# --- sign-out --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_signout_revokes_the_token(client: TestClient, method: str) -> None:
    signup(client, "ann@example.com")
    ended, kept = signin(client, "ann@example.com")["token"], signin(client, "ann@example.com")["token"]
    response = client.request(method, SIGNOUT, headers=bearer(ended))
    assert response.status_code == 200
    assert response.json() == {"status": True, "redirect_url": None}
    cleared = token_cookie(response)
    assert cleared.value == "" and cleared["max-age"] == "0"
    assert refused(client.get(ME, headers=bearer(ended)), 401) == ENDED
    assert refused(client.get(ME, headers=cookie(ended)), 401) == ENDED
    assert client.get(ME, headers=bearer(kept)).status_code == 200  # only that session ended


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_signout_by_cookie_revokes_the_token(client: TestClient, method: str) -> None:
    signup(client, "ann@example.com")
    token = signin(client, "ann@example.com")["token"]
    response = client.request(method, SIGNOUT, headers=cookie(token))
    assert response.status_code == 200
    assert token_cookie(response)["max-age"] == "0"
    assert refused(client.get(ME, headers=cookie(token)), 401) == ENDED
    assert refused(client.get(ME, headers=bearer(token)), 401) == ENDED


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_get_signout_from_another_site_by_cookie_is_refused(client: TestClient, site: str) -> None:
    """`same-site`: any sibling subdomain could sign everyone out with an <img> tag."""
    signup(client, "ann@example.com")
    token = signin(client, "ann@example.com")["token"]
    response = client.get(SIGNOUT, headers={**cookie(token), "Sec-Fetch-Site": site})
    assert refused(response, 403) == "Sign-out refused: it did not come from this site."
    assert not response.headers.get_list("set-cookie")
    assert client.get(ME, headers=cookie(token)).status_code == 200


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_a_get_signout_from_this_site_by_cookie_works(client: TestClient, site: str) -> None:
    signup(client, "ann@example.com")
    token = signin(client, "ann@example.com")["token"]
    assert client.get(SIGNOUT, headers={**cookie(token), "Sec-Fetch-Site": site}).status_code == 200
    assert client.get(ME, headers=cookie(token)).status_code == 401


def test_a_get_signout_with_the_token_in_a_header_works_from_anywhere(client: TestClient) -> None:
    """Open WebUI's clients send the token in Authorization: no cookie, no forced sign-out to fear."""
    signup(client, "ann@example.com")
    token = signin(client, "ann@example.com")["token"]
    response = client.get(SIGNOUT, headers={**bearer(token), "Sec-Fetch-Site": "same-site"})
    assert response.status_code == 200
    assert client.get(ME, headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    "credential", [{}, bearer("garbage"), {"Authorization": "Basic YTpi"}, cookie("x.y.z")]
)
def test_signout_without_a_valid_token_still_clears_the_cookie(
    client: TestClient, credential: dict[str, str]
) -> None:
    response = client.post(SIGNOUT, headers=credential)
    assert response.status_code == 200
    assert token_cookie(response)["max-age"] == "0"


def test_signout_after_the_account_was_deleted_still_clears_the_cookie(make_client: MakeClient) -> None:
    client = make_client(DEFAULT_USER_ROLE="user")
    user, admin = user_and_admin(client)
    assert client.delete(f"{USERS}{user['id']}", headers=bearer(admin["token"])).status_code == 200
    # The browser still holds the cookie; signing out must succeed and clear it (not 404 and keep it).
    response = client.post(SIGNOUT, headers=cookie(user["token"]))
    assert response.status_code == 200, response.text
    assert token_cookie(response)["max-age"] == "0"


# --- password change -------------------------------------------------------------------------------


def test_password_change_with_a_wrong_current_password_is_refused(client: TestClient) -> None:
    token = signup(client, "ann@example.com")["token"]
    form = {"password": "not-the-password", "new_password": "another-good-password"}
    assert refused(client.post(PASSWORD_CHANGE, json=form, headers=bearer(token)), 400) == (
        "The current password is incorrect."
    )
    assert client.get(ME, headers=bearer(token)).status_code == 200
    signin(client, "ann@example.com")  # unchanged


def test_password_change_ends_every_session_and_swaps_the_password(client: TestClient) -> None:
    signup(client, "ann@example.com")
    signup(client, "bob@example.com")
    first, second = signin(client, "ann@example.com")["token"], signin(client, "ann@example.com")["token"]
    bystander = signin(client, "bob@example.com")["token"]
    form = {"password": PASSWORD, "new_password": "another-good-password"}
    response = client.post(PASSWORD_CHANGE, json=form, headers=bearer(first))
    assert response.status_code == 200 and response.json() is True
    assert token_cookie(response)["max-age"] == "0"
    for token in (first, second):
        assert refused(client.get(ME, headers=bearer(token)), 401) == ENDED
    assert client.get(ME, headers=bearer(bystander)).status_code == 200  # other accounts are untouched
    old = client.post(SIGNIN, json={"email": "ann@example.com", "password": PASSWORD})
    assert refused(old, 400) == INVALID_CREDENTIALS
    signin(client, "ann@example.com", "another-good-password")


@pytest.mark.parametrize(
    ("new", "message"), [("short", "Password must be at least 8 characters long."), ("x" * 1025, TOO_LONG)]
)
def test_password_change_applies_the_password_rules(client: TestClient, new: str, message: str) -> None:
    token = signup(client, "ann@example.com")["token"]
    response = client.post(
        PASSWORD_CHANGE, json={"password": PASSWORD, "new_password": new}, headers=bearer(token)
    )
    assert refused(response, 400) == message
    assert client.get(ME, headers=bearer(token)).status_code == 200
    signin(client, "ann@example.com")


def test_password_change_needs_a_session(client: TestClient) -> None:
    signup(client, "ann@example.com")
    form = {"password": PASSWORD, "new_password": "another-good-password"}
    assert refused(client.post(PASSWORD_CHANGE, json=form), 401) == NOT_AUTHENTICATED
    signin(client, "ann@example.com")


# --- admin: add an account -------------------------------------------------------------------------


def test_admin_adds_an_account_without_getting_its_token(client: TestClient) -> None:
    admin = signup(client, "admin@example.com")
    form = {"name": "Carol", "email": "Carol@Example.com", "password": PASSWORD}
    response = client.post(ADD, json=form, headers=bearer(admin["token"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "email", "name", "role", "profile_image_url"}  # no token, no token_type
    assert (body["email"], body["name"], body["role"]) == ("carol@example.com", "Carol", "pending")
    assert uuid.UUID(body["id"])
    assert not response.headers.get_list("set-cookie")
    assert signin(client, "carol@example.com")["id"] == body["id"]
    assert client.get(ME, headers=bearer(admin["token"])).json()["id"] == admin["id"]  # admin still themself


@pytest.mark.parametrize("role", ["pending", "user", "admin"])
def test_admin_adds_an_account_with_a_role(client: TestClient, role: str) -> None:
    admin = signup(client, "admin@example.com")
    form = {"name": "Carol", "email": "carol@example.com", "password": PASSWORD, "role": role}
    assert client.post(ADD, json=form, headers=bearer(admin["token"])).json()["role"] == role
    assert signin(client, "carol@example.com")["role"] == role


def test_add_refuses_what_signup_refuses(client: TestClient) -> None:
    admin = signup(client, "admin@example.com")
    cases = [
        (
            {"name": "A", "email": "ADMIN@example.com", "password": PASSWORD},
            "This email is already registered.",
        ),
        (
            {"name": "A", "email": "nope", "password": PASSWORD},
            "Invalid email format. Please enter a valid email address.",
        ),
        (
            {"name": "A", "email": "a@example.com", "password": "short"},
            "Password must be at least 8 characters long.",
        ),
        ({"name": "A", "email": "a@example.com", "password": "x" * 1025}, TOO_LONG),
    ]
    for form, message in cases:
        assert refused(client.post(ADD, json=form, headers=bearer(admin["token"])), 400) == message
    bad_role = {"name": "A", "email": "a@example.com", "password": PASSWORD, "role": "root"}
    response = client.post(ADD, json=bad_role, headers=bearer(admin["token"]))
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["body", "role"]]


def test_add_is_for_admins_only(make_client: MakeClient) -> None:
    client = make_client(DEFAULT_USER_ROLE="user")
    user, _admin = user_and_admin(client)
    form = {"name": "Eve", "email": "eve@example.com", "password": PASSWORD, "role": "admin"}
    assert refused(client.post(ADD, json=form, headers=bearer(user["token"])), 403) == ADMIN_REQUIRED
    assert refused(client.post(ADD, json=form), 401) == NOT_AUTHENTICATED
    eve = client.post(SIGNIN, json={"email": "eve@example.com", "password": PASSWORD})
    assert refused(eve, 400) == INVALID_CREDENTIALS  # nothing was created


# --- own sessions ----------------------------------------------------------------------------------


def test_sessions_lists_only_the_callers_live_sessions(client: TestClient) -> None:
    signup(client, "ann@example.com")
    signup(client, "bob@example.com")
    first = signin(client, "ann@example.com")
    second = signin(client, "ann@example.com")
    signin(client, "bob@example.com")
    response = client.get(SESSIONS, headers=bearer(second["token"]))
    assert response.status_code == 200
    sessions = response.json()
    assert len(sessions) == 3  # sign-up and two sign-ins; never Bob's
    ids = {jwt.decode(t["token"], SECRET, algorithms=["HS256"])["jti"] for t in (first, second)}
    assert ids <= {s["id"] for s in sessions}
    current = [s for s in sessions if s["current"]]
    assert [s["id"] for s in current] == [jwt.decode(second["token"], SECRET, algorithms=["HS256"])["jti"]]
    assert set(sessions[0]) == {
        "id",
        "current",
        "auth_method",
        "created_at",
        "expires_at",
        "last_seen_at",
        "ip",
        "user_agent",
    }
    assert refused(client.get(SESSIONS), 401) == NOT_AUTHENTICATED


def test_revoking_one_of_your_sessions(client: TestClient) -> None:
    signup(client, "ann@example.com")
    keep, end = signin(client, "ann@example.com")["token"], signin(client, "ann@example.com")["token"]
    session_id = jwt.decode(end, SECRET, algorithms=["HS256"])["jti"]
    response = client.delete(f"{SESSIONS}/{session_id}", headers=bearer(keep))
    assert response.status_code == 200 and response.json() is True
    assert refused(client.get(ME, headers=bearer(end)), 401) == ENDED
    assert client.get(ME, headers=bearer(keep)).status_code == 200
    assert session_id not in {s["id"] for s in client.get(SESSIONS, headers=bearer(keep)).json()}


@pytest.mark.parametrize("which", ["another user's", "unknown", "not a uuid"])
def test_you_cannot_revoke_a_session_that_is_not_yours(client: TestClient, which: str) -> None:
    signup(client, "ann@example.com")
    signup(client, "bob@example.com")
    ann, bob = signin(client, "ann@example.com")["token"], signin(client, "bob@example.com")["token"]
    target = {
        "another user's": jwt.decode(bob, SECRET, algorithms=["HS256"])["jti"],
        "unknown": str(uuid.uuid4()),
        "not a uuid": "x" * 300,
    }[which]
    assert refused(client.delete(f"{SESSIONS}/{target}", headers=bearer(ann)), 404) == "Session not found."
    assert client.get(ME, headers=bearer(bob)).status_code == 200


def test_signing_out_everywhere(client: TestClient) -> None:
    signup(client, "ann@example.com")
    signup(client, "bob@example.com")
    tokens = [signin(client, "ann@example.com")["token"] for _ in range(2)]
    bystander = signin(client, "bob@example.com")["token"]
    response = client.post(REVOKE_ALL, headers=bearer(tokens[0]))
    assert response.status_code == 200 and response.json() is True
    assert token_cookie(response)["max-age"] == "0"
    for token in tokens:
        assert refused(client.get(ME, headers=bearer(token)), 401) == ENDED
    assert client.get(ME, headers=bearer(bystander)).status_code == 200
    assert refused(client.post(REVOKE_ALL), 401) == NOT_AUTHENTICATED


def test_ended_sessions_are_no_longer_listed(client: TestClient) -> None:
    signup(client, "ann@example.com")
    old = signin(client, "ann@example.com")["token"]
    assert client.post(REVOKE_ALL, headers=bearer(old)).status_code == 200
    fresh = signin(client, "ann@example.com")["token"]
    listed = client.get(SESSIONS, headers=bearer(fresh)).json()
    # Every earlier session was ended; the list must not offer them as live ones.
    assert [s["id"] for s in listed] == [jwt.decode(fresh, SECRET, algorithms=["HS256"])["jti"]]


# --- token attacks ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(claims: dict[str, Any], *, key: str = SECRET, alg: str = "HS256", typ: str = "JWT") -> str:
    """A JWT signed by hand (no library checks on key length or algorithm in the way)."""
    signing_input = (
        f"{b64url(json.dumps({'alg': alg, 'typ': typ}).encode())}.{b64url(json.dumps(claims).encode())}"
    )
    if alg.lower() == "none":
        return f"{signing_input}."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    signature = hmac.new(key.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def _rs256(claims: dict[str, Any]) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256")


def _tampered(token: str, changes: dict[str, Any]) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{b64url(json.dumps({**claims, **changes}).encode())}.{signature}"


def _without(claim: str) -> Callable[[str, dict[str, Any], str], str]:
    return lambda _token, claims, _admin: "Bearer " + forge({k: v for k, v in claims.items() if k != claim})


def _changed(**changes: Any) -> Callable[[str, dict[str, Any], str], str]:
    def attack(_token: str, claims: dict[str, Any], _admin: str) -> str:
        now = int(time.time())
        values = {k: (v(now) if callable(v) else v) for k, v in changes.items()}
        return "Bearer " + forge({**claims, **values})

    return attack


# Each builds an Authorization header from the user's valid token, its claims and the admin's id.
ATTACKS: dict[str, Callable[[str, dict[str, Any], str], str | bytes]] = {
    "expired": _changed(iat=lambda now: now - 7200, exp=lambda now: now - 5),
    "issued-in-the-future": _changed(iat=lambda now: now + 3600, exp=lambda now: now + 7200),
    "tampered-payload-admin-id": lambda token, _claims, admin: "Bearer " + _tampered(token, {"id": admin}),
    "tampered-payload-no-expiry": lambda token, _claims, _admin: "Bearer " + _tampered(token, {"exp": None}),
    "signature-stripped": lambda token, _claims, _admin: "Bearer " + token.rsplit(".", 1)[0] + ".",
    "signature-of-another-token": lambda token, claims, _admin: (
        "Bearer "
        + token.rsplit(".", 1)[0]
        + "."
        + forge({**claims, "jti": str(uuid.uuid4())}).rsplit(".", 1)[1]
    ),
    "alg-none": lambda _token, claims, _admin: "Bearer " + forge(claims, alg="none"),
    "alg-none-upper": lambda _token, claims, _admin: "Bearer " + forge(claims, alg="NONE"),
    "alg-none-keeping-signature": lambda token, claims, _admin: (
        "Bearer " + forge(claims, alg="none") + token.rsplit(".", 1)[1]
    ),
    "hs384-same-key": lambda _token, claims, _admin: "Bearer " + forge(claims, alg="HS384"),
    "hs512-same-key": lambda _token, claims, _admin: "Bearer " + forge(claims, alg="HS512"),
    "rs256-other-key": lambda _token, claims, _admin: "Bearer " + _rs256(claims),
    "wrong-key": lambda _token, claims, _admin: "Bearer " + forge(claims, key="another-secret-" + "k" * 40),
    "missing-id": _without("id"),
    "missing-jti": _without("jti"),
    "missing-iat": _without("iat"),
    "missing-typ": _without("typ"),
    "missing-session-stamp": _without("session_stamp"),
    "typ-automation": _changed(typ="automation"),
    "typ-empty": _changed(typ=""),
    "id-not-a-string": _changed(id=12345),
    "iat-not-a-number": _changed(iat="yesterday"),
    "stale-session-stamp": _changed(session_stamp="stamp-from-before-a-password-change"),
    "unknown-user": _changed(id=str(uuid.uuid4())),
    "oversized-but-validly-signed": _changed(padding="x" * 10240),
    "garbage": lambda *_: "Bearer garbage",
    "three-empty-segments": lambda *_: "Bearer ..",
    "dots-only": lambda *_: "Bearer .....",
    "a.b.c": lambda *_: "Bearer a.b.c",
    "base64-junk": lambda *_: "Bearer " + "eyJ" * 100 + ".eyJ.eyJ",
    "not-utf8": lambda *_: b"Bearer \xff\xfe\xfd",
    "two-tokens": lambda token, *_: f"Bearer {token} {token}",
    "basic-scheme": lambda *_: "Basic " + base64.b64encode(b"bob@example.com:" + PASSWORD.encode()).decode(),
    "token-scheme-valid-token": lambda token, *_: f"Token {token}",
    "no-scheme-valid-token": lambda token, *_: token,
    "empty-bearer": lambda *_: "Bearer",
    "bearer-and-spaces": lambda *_: "Bearer    ",
}
MESSAGES = {INVALID_TOKEN, EXPIRED, ENDED, BAD_SCHEME}


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    """One instance for every attack (they change nothing): a client, a user's valid token, the admin's id."""
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("victim")),
        "WEBUI_SECRET_KEY": SECRET,
        "DEFAULT_USER_ROLE": "user",
        "AUTH_FAILURE_RATE_LIMIT": "1000/1m",  # the attacks below are many failures from one address
    }
    with TestClient(create_app(load_settings(env)), headers={"origin": ORIGIN}) as client:
        user, admin = user_and_admin(client)
        yield client, user["token"], admin["id"]


def test_the_forging_helper_makes_tokens_wardgate_accepts(victim: tuple[TestClient, str, str]) -> None:
    # The control for the attacks below: with the real key and claims, a hand-made token works.
    client, token, _admin = victim
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert client.get(ME, headers=bearer(forge(claims))).status_code == 200
    assert client.get(ME, headers={"Authorization": "bearer " + token}).status_code == 200  # RFC 9110 §11.1


@pytest.mark.parametrize("attack", list(ATTACKS.values()), ids=list(ATTACKS))
def test_bad_tokens_are_refused_with_401(
    victim: tuple[TestClient, str, str], attack: Callable[[str, dict[str, Any], str], str | bytes]
) -> None:
    client, token, admin_id = victim
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    response = client.get(USERS, headers={"Authorization": attack(token, claims, admin_id)})
    assert refused(response, 401) in MESSAGES
    assert client.get(ME, headers=bearer(token)).json()["role"] == "user"  # the real token still works


@pytest.mark.parametrize(
    "attack", ["expired", "alg-none", "wrong-key", "missing-jti", "oversized-but-validly-signed", "garbage"]
)
def test_bad_tokens_in_the_cookie_are_refused_with_401(
    victim: tuple[TestClient, str, str], attack: str
) -> None:
    client, token, admin_id = victim
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    forged = ATTACKS[attack](token, claims, admin_id)
    assert isinstance(forged, str)
    response = client.get(ME, headers=cookie(forged.removeprefix("Bearer ")))
    assert refused(response, 401) in MESSAGES


# --- changes take effect on the next request --------------------------------------------------------


def test_role_change_takes_effect_on_the_next_request(probe: TestClient) -> None:
    user, admin = user_and_admin(probe)
    token, edit = user["token"], f"{USERS}{user['id']}/update"

    def set_role(role: str) -> None:
        assert probe.post(edit, json={"role": role}, headers=bearer(admin["token"])).status_code == 200

    set_role("user")
    assert probe.get("/probe/verified", headers=bearer(token)).status_code == 200
    assert refused(probe.get(USERS, headers=bearer(token)), 403) == ADMIN_REQUIRED
    set_role("admin")
    assert probe.get(USERS, headers=bearer(token)).status_code == 200  # same token, no new sign-in
    set_role("pending")
    assert refused(probe.get("/probe/verified", headers=bearer(token)), 403) == (
        "Your account is pending approval by an administrator."
    )
    assert refused(probe.get(USERS, headers=bearer(token)), 403) == ADMIN_REQUIRED
    assert probe.get(ME, headers=bearer(token)).json()["role"] == "pending"


def test_revocation_survives_a_restart(make_settings: Callable[..., Settings]) -> None:
    def instance() -> TestClient:
        return TestClient(create_app(make_settings()), headers={"origin": ORIGIN})

    with instance() as first:
        signup(first, "ann@example.com")
        ended, kept = signin(first, "ann@example.com")["token"], signin(first, "ann@example.com")["token"]
        assert first.post(SIGNOUT, headers=bearer(ended)).status_code == 200
    with instance() as second:  # a new process view, loaded from the same DATA_DIR
        assert refused(second.get(ME, headers=bearer(ended)), 401) == ENDED
        assert second.get(ME, headers=bearer(kept)).status_code == 200


@pytest.mark.parametrize(
    "how", ["signed up there", "added there", "password changed there", "token from there"]
)
def test_an_account_changed_on_another_instance_is_not_refused_here(
    make_settings: Callable[..., Settings], how: str
) -> None:
    # Two instances on one database, neither polling the change log during the test. The database is
    # the truth: a genuine token for an account this instance's view has not caught up with yet (new,
    # or with a new session stamp) must be checked against the database, not refused as "ended".
    settings = make_settings(SESSION_SYNC_INTERVAL="60")
    with TestClient(create_app(settings), headers={"origin": ORIGIN}) as here:
        admin = signup(here, "admin@example.com")["token"]
        if how == "password changed there":
            bob = signup(here, "bob@example.com")["token"]
        with TestClient(create_app(settings), headers={"origin": ORIGIN}) as there:  # loads all of the above
            password = PASSWORD
            if how == "signed up there":
                signup(there, "bob@example.com")
            elif how == "added there":
                form = {"name": "Bob", "email": "bob@example.com", "password": PASSWORD, "role": "user"}
                assert there.post(ADD, json=form, headers=bearer(admin)).status_code == 200
            elif how == "password changed there":
                password = "a-brand-new-password"
                form = {"password": PASSWORD, "new_password": password}
                assert there.post(PASSWORD_CHANGE, json=form, headers=bearer(bob)).status_code == 200
            if how == "token from there":
                token = signup(there, "bob@example.com")["token"]
            else:
                token = signin(here, "bob@example.com", password)[
                    "token"
                ]  # signed in here, from the database
            response = here.get(ME, headers=bearer(token))
            assert response.status_code == 200, response.text


# --- legacy hashes and races, on SQLite and PostgreSQL ----------------------------------------------


def test_open_webui_bcrypt_hash_signs_in_and_is_upgraded(
    database_url: str, make_client: MakeClient, tmp_path: Path
) -> None:
    engine = db.create_db_engine(database_url)
    schema.upgrade(engine, lock_dir=tmp_path)
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(12)).decode()
    now = int(time.time())
    with Session(engine) as session, session.begin():
        session.add(
            User(
                id=str(uuid.uuid4()),
                email="legacy@example.com",
                name="Legacy",
                role="user",
                active=True,
                password_hash=legacy,
                session_stamp="stamp-from-open-webui",
                created_at=now,
                updated_at=now,
            )
        )

    def stored_hash() -> str | None:
        with Session(engine) as session:
            return session.scalar(select(User.password_hash).where(User.email == "legacy@example.com"))

    try:
        client = make_client(DATABASE_URL=database_url)
        wrong = client.post(SIGNIN, json={"email": "legacy@example.com", "password": "not-the-password"})
        assert refused(wrong, 400) == INVALID_CREDENTIALS
        assert stored_hash() == legacy
        body = signin(client, "legacy@example.com")
        assert client.get(ME, headers=bearer(body["token"])).json()["role"] == "user"
        upgraded = stored_hash()
        assert upgraded is not None and upgraded.startswith("$argon2id$")
        assert Argon2Hasher().verify(upgraded, PASSWORD)
        signin(client, "legacy@example.com")  # and the new hash works
    finally:
        engine.dispose()


def test_concurrent_first_signups_make_exactly_one_admin(database_url: str, make_client: MakeClient) -> None:
    client = make_client(DATABASE_URL=database_url, PASSWORD_HASH_CONCURRENCY="20", **GENEROUS_LIMITS)
    count = 20
    start = threading.Barrier(count)

    def attempt(i: int) -> httpx.Response:
        start.wait(timeout=10)
        form = {"name": f"User {i}", "email": f"user{i}@example.com", "password": PASSWORD}
        return client.post(SIGNUP, json=form)

    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(attempt, range(count)))
    assert [r.status_code for r in responses] == [200] * count, [r.text for r in responses]
    roles = [r.json()["role"] for r in responses]
    assert sorted(roles) == ["admin"] + ["pending"] * (count - 1)
    admin = responses[roles.index("admin")].json()
    listing = client.get(f"{USERS}?limit=100", headers=bearer(admin["token"])).json()
    assert listing["total"] == count
    assert [u["role"] for u in listing["users"]].count("admin") == 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/usage?model=%00"),
        ("GET", "/api/v1/usage?api_key_id=%00"),
        ("GET", "/api/v1/audit?actor=%00"),
        ("GET", "/api/v1/users/?query=%00"),
        ("DELETE", "/api/v1/auths/sessions/%00"),
        ("DELETE", "/api/v1/auths/api_keys/%00"),
    ],
)
def test_a_nul_in_the_address_of_a_route_is_refused(
    database_url: str, make_client: MakeClient, method: str, path: str
) -> None:
    """PostgreSQL cannot compare text holding a NUL: psycopg refused to send the filter or the id,
    a 500 for any signed-in person (found by review)."""
    client = make_client(DATABASE_URL=database_url)
    admin = signup(client, "ada@example.com")
    response = client.request(method, path, headers=bearer(admin["token"]))
    where = "path" if "%00" in path.split("?")[0] else "query"
    problem = {"loc": [where], "msg": NUL_REFUSED, "type": "value_error"}
    assert response.status_code == 422 and response.json() == {"detail": [problem]}


def test_signing_out_an_ended_session_again_writes_nothing(client: TestClient) -> None:
    """A signed-out token may still sign out (its signature holds): each time wrote an audit row and
    a change-log row that every instance reads, for as long as anyone liked (found by review). So
    did every `DELETE` of a session id that does not exist."""
    token = signup(client, "ada@example.com")["token"]
    gateway = gateway_of(client)

    def rows() -> tuple[int, int]:
        with gateway.sessions() as db:
            audit = db.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.event == "auth.signout")
            )
            changes = db.scalar(select(func.count()).select_from(AuthChange))
        return int(audit or 0), int(changes or 0)

    assert client.post("/api/v1/auths/signout", headers=bearer(token)).status_code == 200
    once = rows()
    for _ in range(5):
        client.post("/api/v1/auths/signout", headers=bearer(token))
    assert rows() == once and once[0] == 1
    other = signin(client, "ada@example.com")["token"]
    with gateway.sessions() as db:
        before = db.scalar(select(func.count()).select_from(AuditEvent))
    for i in range(5):
        assert client.delete(f"/api/v1/auths/sessions/nope{i}", headers=bearer(other)).status_code == 404
    with gateway.sessions() as db:
        assert db.scalar(select(func.count()).select_from(AuditEvent)) == before
