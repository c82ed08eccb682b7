"""End to end against a real OpenID Connect provider (panva/oidc-provider, run by node): the full flow,
sign-out at the provider, replays, and the account-linking rules with real claims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, signup
from tests.oauth.conftest import APP, Browser, error_of, gateway_of, oidc_env
from wardgate.oauth import linking
from wardgate.oauth.flow import CODE_REFUSED
from wardgate.oauth.state import STATE_MISMATCH, STATE_MISSING, STATE_USED
from wardgate.storage.models import OAuthIdentity, OAuthToken, UserGroup

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]


def me(app: TestClient) -> dict[str, Any]:
    """GET /api/v1/auths/ with the browser's cookie."""
    response = app.get("/api/v1/auths/")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def sso(make_client: MakeClient, oidc_issuer: str, browser_for: MakeBrowser) -> Callable[..., Browser]:
    """A browser at a wardgate configured for the real provider (overrides: variables)."""

    def make(**overrides: str) -> Browser:
        return browser_for(make_client(**oidc_env(oidc_issuer, **overrides)))

    return make


def test_full_flow_session_and_sign_out_at_the_provider(
    sso: Callable[..., Browser], oidc_issuer: str
) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    app = browser.app
    response = browser.sign_in(login="alice", redirect="/chat?room=1")
    assert response.status_code == 302 and response.headers["location"] == "/chat?room=1"
    cookies = response.headers.get_list("set-cookie")
    token_cookie = next(c for c in cookies if c.startswith("token="))
    assert "HttpOnly" in token_cookie and "Path=/" in token_cookie
    assert any(c.startswith("wardgate_oauth=") and "Max-Age=0" in c for c in cookies)  # state consumed

    user = me(app)
    assert (user["email"], user["name"], user["role"]) == ("alice@example.test", "Alice Admin", "admin")
    assert user["token"] == ""  # never echoed to a cookie client
    sessions = app.get("/api/v1/auths/sessions").json()
    assert [s["auth_method"] for s in sessions] == ["oauth"]

    signout = app.post("/api/v1/auths/signout")
    assert signout.status_code == 200
    url = signout.json()["redirect_url"]
    assert "id_token" not in signout.text.replace("id_token_hint", "")  # only as the hint
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{oidc_issuer}/session/end"
    assert query["post_logout_redirect_uri"] == f"{APP}/auth"
    assert query["client_id"] == "wardgate"
    assert query["id_token_hint"].count(".") == 2
    assert app.get("/api/v1/auths/").status_code == 401

    # The provider accepts the hint: it asks to confirm, then returns to post_logout_redirect_uri.
    page = browser.web.get(url)
    assert page.status_code == 200 and "session/end/confirm" in page.text, page.text
    xsrf = page.text.split('name="xsrf" value="')[1].split('"')[0]
    confirm = browser.web.post(f"{oidc_issuer}/session/end/confirm", data={"xsrf": xsrf, "logout": "yes"})
    assert confirm.status_code in (302, 303)
    assert urljoin(oidc_issuer, confirm.headers["location"]).startswith(f"{APP}/auth")
    # The provider session is gone: a new sign-in asks for the login again.
    again = browser.web.get(browser.start())
    assert again.status_code in (302, 303) and "/interaction/" in again.headers["location"]
    assert 'name="login"' in browser.web.get(urljoin(oidc_issuer, again.headers["location"])).text


def test_open_webui_callback_path_and_public_config(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    assert browser.app.get("/api/config").json()["oauth"] == {"providers": {"oidc": "Test IdP"}}
    callback = browser.authorize(browser.start(), "alice")
    other_path = callback.replace("/oauth/oidc/callback?", "/oauth/oidc/login/callback?")
    # The redirect_uri sent was .../callback, so the exchange must use it even on the other path.
    response = browser.get(other_path)
    assert response.status_code == 302 and response.headers["location"] == "/"
    assert me(browser.app)["email"] == "alice@example.test"


def test_provider_tokens_are_stored_encrypted_and_never_returned(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    browser.sign_in()
    gw = gateway_of(browser.app)
    with gw.sessions() as db:
        row = db.scalars(select(OAuthToken)).one()
    assert gw.sign_on is not None
    tokens = gw.sign_on.tokens.load(row.session_id)
    assert tokens is not None and tokens.id_token and tokens.access_token
    for secret in (tokens.access_token, tokens.id_token, tokens.refresh_token or "no-refresh"):
        assert secret not in row.ciphertext
        for path in ("/api/v1/auths/", "/api/v1/auths/sessions", "/api/config"):
            assert secret not in browser.app.get(path).text
    assert "access_token" not in repr(tokens)


def test_a_replayed_callback_is_refused_even_with_the_cookie(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    callback = browser.authorize(browser.start())
    sealed = browser.app.cookies.get("wardgate_oauth")
    assert sealed
    assert browser.get(callback).headers["location"] == "/"
    replay = browser.app.get(
        callback.removeprefix(APP), headers={"cookie": f"wardgate_oauth={sealed}"}, follow_redirects=False
    )
    assert error_of(replay) == STATE_USED


def test_a_replayed_code_is_refused_by_the_provider(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    first = browser.authorize(browser.start())
    assert browser.get(first).status_code == 302
    code = parse_qs(urlsplit(first).query)["code"][0]
    second = browser.authorize(browser.start())  # a fresh state and cookie, but the old code
    query = {k: v[0] for k, v in parse_qs(urlsplit(second).query).items()}
    replay = browser.get(f"/oauth/oidc/callback?code={code}&state={query['state']}&iss={query['iss']}")
    assert error_of(replay) == CODE_REFUSED


def test_missing_or_foreign_state_is_refused(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    callback = browser.authorize(browser.start())
    query = parse_qs(urlsplit(callback).query)
    forged = f"/oauth/oidc/callback?code={query['code'][0]}&state=attacker-chosen"
    assert error_of(browser.get(forged)) == STATE_MISMATCH  # and the pending sign-in is dropped
    # The genuine response, replayed in a browser without the state cookie (login CSRF):
    assert error_of(browser.get(callback)) == STATE_MISSING
    assert error_of(browser.get("/oauth/oidc/callback")) == STATE_MISSING


def test_sign_up_disabled_refuses_unknown_identities(sso: Callable[..., Browser]) -> None:
    browser = sso()  # ENABLE_OAUTH_SIGNUP defaults to false
    assert error_of(browser.sign_in()) == linking.SIGNUP_DISABLED
    assert browser.app.get("/api/v1/auths/").status_code == 401


def test_unverified_email_is_never_merged(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    signup(browser.app, "admin@example.test")
    signup(browser.app, "bob@example.test")  # bob's own password account
    assert error_of(browser.sign_in(login="bob")) == linking.MERGE_UNVERIFIED


def test_merge_is_off_by_default_even_for_verified_emails(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    signup(browser.app, "admin@example.test")
    signup(browser.app, "dave@example.test")
    assert error_of(browser.sign_in(login="dave")) == linking.EMAIL_TAKEN


def test_verified_email_never_merges_onto_an_admin_or_an_unproven_account(
    sso: Callable[..., Browser],
) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    admin = signup(browser.app, "alice@example.test")  # the first account: admin
    assert admin["role"] == "admin"
    assert error_of(browser.sign_in(login="alice")) == linking.MERGE_ADMIN
    signup(browser.app, "dave@example.test")  # a typed address: nothing proves it is dave's
    assert error_of(browser.sign_in(login="dave")) == linking.MERGE_UNPROVEN
    with gateway_of(browser.app).sessions() as db:
        assert db.scalars(select(OAuthIdentity)).all() == []
    # The password account is untouched (tests/oauth/test_sso_findings.py: linking it from inside).
    assert (
        browser.app.post(
            "/api/v1/auths/signin", json={"email": "dave@example.test", "password": PASSWORD}
        ).status_code
        == 200
    )


def test_allowed_domains_match_the_verified_domain_exactly(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_ALLOWED_DOMAINS="example.test")
    assert error_of(browser.sign_in(login="carol")) == linking.DOMAIN_NOT_ALLOWED
    assert error_of(browser.sign_in(login="bob")) == linking.DOMAIN_UNVERIFIED  # unverified address
    assert browser.sign_in(login="alice").headers["location"] == "/"
    subdomain = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_ALLOWED_DOMAINS="test")  # no suffix matching
    assert error_of(subdomain.sign_in(login="alice")) == linking.DOMAIN_NOT_ALLOWED


def test_blocked_group_refuses_sign_in(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_BLOCKED_GROUPS='["contractors-*"]')
    assert error_of(browser.sign_in(login="mallory")) == linking.GROUP_BLOCKED
    assert (
        browser.sign_in(login="alice").status_code == 302 and error_of(browser.sign_in(login="alice")) is None
    )


def test_nested_and_delimited_role_claims_and_groups(sso: Callable[..., Browser]) -> None:
    browser = sso(
        ENABLE_OAUTH_SIGNUP="true",
        ENABLE_OAUTH_ROLE_MANAGEMENT="true",
        OAUTH_ROLES_CLAIM="realm_access.roles",
        OAUTH_ADMIN_ROLES="wardgate-admin",
        OAUTH_ALLOWED_ROLES="wardgate-user",
        ENABLE_OAUTH_GROUP_MANAGEMENT="true",
    )
    signup(browser.app, "first@example.test")  # so nobody becomes admin by being first
    browser.sign_in(login="alice")
    assert me(browser.app)["role"] == "admin"  # from realm_access.roles (nested)
    assert error_of(browser.sign_in(login="bob")) == linking.ROLE_NOT_ALLOWED  # no roles at all
    gw = gateway_of(browser.app)
    alice = me(browser.app)["id"]
    assert linking.user_groups(gw.sessions, alice) == ["engineering", "staff"]

    flat = sso(  # a second instance on the same database
        ENABLE_OAUTH_SIGNUP="true",
        ENABLE_OAUTH_ROLE_MANAGEMENT="true",
        OAUTH_ALLOWED_ROLES="wardgate-user",
        ENABLE_OAUTH_GROUP_MANAGEMENT="true",
    )
    flat.sign_in(login="dave")  # roles "viewer,wardgate-user"; groups "staff;engineering"
    assert me(flat.app)["role"] == "user"
    dave = me(flat.app)["id"]
    with gateway_of(flat.app).sessions() as db:
        assert sorted(db.scalars(select(UserGroup.name).where(UserGroup.user_id == dave))) == [
            "engineering",
            "staff",
        ]
