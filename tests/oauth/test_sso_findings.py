"""Issue 12, items 12-14 of the adversarial review, each attack tried end to end against the real
OpenID Connect provider (panva/oidc-provider) and refused:

- 12: an account registered with a colleague's address before the colleague's first single sign-on
  is not merged into; a person links a provider from inside the account instead, and an account with
  a password that gains an identity loses every session and API key it had;
- 13: leaving `groups` out of the authorization URL's scope, or a provider that sends no groups
  claim, never passes blocked groups or keeps stored groups;
- 14: addresses that fold to another (U+212A KELVIN SIGN, full-width letters) never merge or pass
  the domain check; `xms_edov` is believed from Microsoft only; a revoked session's ID token is
  never handed out at sign-out, and provider tokens go with their sessions.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from sqlalchemy import select, text
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, signin, signup
from tests.fakes.idp import FakeIdP
from tests.oauth.conftest import Browser, fake_env, gateway_of, oidc_env, refusal_code
from wardgate.errors import PermissionDeniedError, StoreUnavailableError
from wardgate.identity import accounts
from wardgate.oauth import linking
from wardgate.storage.models import ApiKey, OAuthIdentity, OAuthToken, User

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]
KEYS = {"ENABLE_API_KEYS": "true", "USER_PERMISSIONS_FEATURES_API_KEYS": "true", "DEFAULT_USER_ROLE": "user"}
FRANK = {"email": "frank@example.test", "email_verified": True, "name": "Frank", "groups": ["ai-users"]}


@pytest.fixture
def sso(make_client: MakeClient, oidc_issuer: str, browser_for: MakeBrowser) -> Callable[..., Browser]:
    """A browser at a wardgate configured for the real provider (overrides: variables)."""

    def make(**overrides: str) -> Browser:
        return browser_for(make_client(**oidc_env(oidc_issuer, **overrides)))

    return make


@pytest.fixture
def two_providers(
    make_client: MakeClient, oidc_issuer: str, idp: FakeIdP, browser_for: MakeBrowser
) -> Callable[..., Browser]:
    """A browser at a wardgate with the real provider (`oidc`) and the fake one as Google."""

    def make(**overrides: str) -> Browser:
        return browser_for(make_client(**oidc_env(oidc_issuer, **fake_env(idp, "google", **overrides))))

    return make


def me(app: TestClient, **headers: str) -> dict[str, Any]:
    """GET /api/v1/auths/ (the cookie, or the given headers)."""
    response = app.get("/api/v1/auths/", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def without_scope(authorize_url: str, name: str) -> str:
    """The authorization URL with one scope edited out, as a person can do in the address bar."""
    parts = urlsplit(authorize_url)
    query = [
        (k, " ".join(s for s in v.split() if s != name) if k == "scope" else v)
        for k, v in parse_qsl(parts.query)
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def set_account(issuer: str, login: str, claims: dict[str, Any]) -> None:
    """Change an account at the provider (tests/oauth/provider/provider.mjs: PUT /test/accounts/...)."""
    request = urllib.request.Request(  # noqa: S310 - the test provider on loopback
        f"{issuer}/test/accounts/{login}", data=json.dumps(claims).encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        assert answer.status == 204


def start_link(app: TestClient, provider: str = "oidc", password: str | None = PASSWORD) -> str:
    """Press "Link <provider>" on the account page (with the current password, for an account that
    has one): the provider URL the page continues to."""
    form = {"password": password} if password is not None else {}
    response = app.post(f"/oauth/{provider}/link", data=form, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert any(c.startswith("wardgate_oauth=") for c in response.headers.get_list("set-cookie"))
    found = re.search(r'<a class="button" href="([^"]+)"', response.text)
    assert found, response.text
    return html.unescape(found.group(1))


def password_session(app: TestClient, email: str) -> None:
    """Sign in with the password in the browser (the cookie stays in the client)."""
    response = app.post("/api/v1/auths/signin", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text


def identities(app: TestClient) -> list[tuple[str, str, str]]:
    """(provider, subject, user id) of every stored identity."""
    with gateway_of(app).sessions() as db:
        rows = db.scalars(select(OAuthIdentity).order_by(OAuthIdentity.created_at))
        return [(r.provider, r.subject, r.user_id) for r in rows]


def api_keys_of(app: TestClient, user_id: str) -> list[str]:
    """The ids of a user's API keys."""
    with gateway_of(app).sessions() as db:
        return list(db.scalars(select(ApiKey.id).where(ApiKey.user_id == user_id)))


def provider_tokens(app: TestClient) -> list[str]:
    """The session ids that hold provider tokens."""
    with gateway_of(app).sessions() as db:
        return list(db.scalars(select(OAuthToken.session_id)))


# --- item 12: pre-hijacked accounts ---------------------------------------------------------------


def test_an_address_registered_before_the_first_sign_on_is_not_merged(sso: Callable[..., Browser]) -> None:
    browser = sso(
        OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true",
        ENABLE_OAUTH_ROLE_MANAGEMENT="true",
        OAUTH_ROLES_CLAIM="realm_access.roles",
        OAUTH_ADMIN_ROLES="wardgate-admin",
    )
    app = browser.app
    signup(app, "root@example.test")  # the first account: the admin
    squatter = signup(app, "alice@example.test", password="the-attackers-own-pass")  # nothing proves it
    # alice's first single sign-on: her provider grants the admin role.
    assert refusal_code(browser.sign_in(login="alice")) == "oauth_merge_unproven"
    assert identities(app) == []
    token = signin(app, "alice@example.test", "the-attackers-own-pass")["token"]
    assert app.get("/api/v1/users/", headers=bearer(token)).status_code == 403  # still pending
    assert me(app, **bearer(squatter["token"]))["role"] == "pending"


def test_a_person_links_a_provider_from_inside_the_account(sso: Callable[..., Browser]) -> None:
    browser = sso(**KEYS)
    app = browser.app
    signup(app, "root@example.test")
    dave = signup(app, "dave@example.test")  # a password session elsewhere
    created = app.post("/api/v1/auths/api_keys", json={"name": "ci"}, headers=bearer(dave["token"]))
    assert created.status_code == 200, created.text
    password_session(app, "dave@example.test")  # this browser
    page = app.get("/account").text
    assert 'action="/oauth/oidc/link"' in page and "Link Test IdP" in page

    done = browser.get(browser.authorize(start_link(app), "dave"))
    assert done.status_code == 302 and done.headers["location"] == "/account?notice=linked-signed-out"
    assert identities(app) == [("oidc", "dave", dave["id"])]
    # Every session and API key the account had before has ended; this browser has a fresh one.
    assert app.get("/api/v1/auths/", headers=bearer(dave["token"])).status_code == 401
    assert api_keys_of(app, dave["id"]) == []
    assert me(app)["id"] == dave["id"]
    assert [s["auth_method"] for s in app.get("/api/v1/auths/sessions").json()] == ["oauth"]
    assert (
        "Every other session and API key of this account has ended" in app.get(done.headers["location"]).text
    )
    assert 'action="/oauth/oidc/link"' not in app.get("/account").text  # linked: no button
    # From now on the identity signs in to this account.
    assert browser.sign_in(login="dave").headers["location"] == "/"
    assert me(app)["id"] == dave["id"]


def test_linking_is_refused_without_the_live_session_that_asked(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    app = browser.app
    signup(app, "root@example.test")
    assert (
        app.post("/oauth/oidc/link", follow_redirects=False).headers["location"]
        == "/auth?redirect=/account&notice=session-ended"
    )
    signup(app, "dave@example.test")
    password_session(app, "dave@example.test")
    cross_site = app.post("/oauth/oidc/link", headers={"origin": "https://evil.example"})
    assert cross_site.status_code == 403  # the CSRF check of every cookie-authenticated form

    url = start_link(app)
    assert app.post("/api/v1/auths/signout").status_code == 200  # the session that asked ends
    assert refusal_code(browser.get(browser.authorize(url, "dave"))) == "oauth_link_session_ended"
    assert identities(app) == []

    browser.app.cookies.clear()
    assert browser.sign_in(login="carol").headers["location"] == "/"  # carol's own account
    password_session(app, "dave@example.test")
    taken = browser.get(browser.authorize(start_link(app), "carol"))
    assert refusal_code(taken) == "oauth_identity_taken"  # never moved to another account
    assert [p for p, _, _ in identities(app)] == ["oidc"] and identities(app)[0][1] == "carol"


def test_a_link_planted_in_another_browser_links_nothing(sso: Callable[..., Browser]) -> None:
    """Review finding: the attacker starts a link in his own browser and plants its state cookie in
    the victim's (a sibling site can set cookies for the parent domain), then sends her to the
    provider. Her identity must not be linked to his account, nor her browser signed in to it."""
    browser = sso()
    app = browser.app
    signup(app, "root@example.test")
    signup(app, "mallory@example.test")
    victim = signup(app, "dave@example.test")
    password_session(app, "mallory@example.test")
    url = start_link(app)  # the attacker's link: its sealed state is in the wardgate_oauth cookie
    app.cookies.delete("token")
    password_session(app, "dave@example.test")  # the victim's browser: her own session, his cookie
    assert refusal_code(browser.get(browser.authorize(url, "dave"))) == "oauth_link_other_browser"
    assert identities(app) == []
    assert me(app)["id"] == victim["id"]  # still herself


def test_linking_asks_for_presence_not_just_a_session(
    sso: Callable[..., Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: whoever holds a session (a borrowed laptop, a stolen cookie) could bind his own
    identity as a way back in that outlives a password change. The current password is asked; an
    account without one needs a sign-in from the last ten minutes."""
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    app = browser.app
    signup(app, "root@example.test")
    signup(app, "dave@example.test")
    password_session(app, "dave@example.test")
    for form in ({}, {"password": "not-his-password"}):
        refused = app.post("/oauth/oidc/link", data=form, follow_redirects=False)
        assert refused.status_code == 400 and "The current password is incorrect." in refused.text
        assert not any(c.startswith("wardgate_oauth=") for c in refused.headers.get_list("set-cookie"))
    start_link(app)  # with the password: on to the provider

    app.cookies.clear()
    assert browser.sign_in(login="carol").headers["location"] == "/"  # an account with no password
    later = time.time() + 660
    monkeypatch.setattr(accounts, "_now", lambda: int(later))  # eleven minutes after that sign-in
    stale = app.post("/oauth/oidc/link", follow_redirects=False)
    assert stale.status_code == 403 and "Sign in again first" in stale.text
    monkeypatch.undo()
    start_link(app, password=None)  # freshly signed in: on to the provider


def test_a_merge_onto_a_proven_account_ends_its_password_sessions_and_keys(
    two_providers: Callable[..., Browser], idp: FakeIdP
) -> None:
    browser = two_providers(OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true", **KEYS)
    app = browser.app
    signup(app, "root@example.test")
    dave = signup(app, "dave@example.test")
    password_session(app, "dave@example.test")
    browser.get(browser.authorize(start_link(app), "dave"))  # the provider vouches for the address
    later = signin(app, "dave@example.test")  # the password is used again, and a key is made
    assert app.post("/api/v1/auths/api_keys", json={"name": "x"}, headers=bearer(later["token"])).is_success

    idp.claims = {"sub": "g-dave", "email": "dave@example.test", "email_verified": True, "name": "Dave"}
    assert browser.sign_in("google").headers["location"] == "/"
    assert me(app)["id"] == dave["id"]  # merged: the address was proven by the linked identity
    assert app.get("/api/v1/auths/", headers=bearer(later["token"])).status_code == 401
    assert api_keys_of(app, dave["id"]) == []
    assert [p for p, _, _ in identities(app)] == ["oidc", "google"]


# --- item 13: groups rules bypassed by dropping a scope -------------------------------------------


def test_leaving_out_the_groups_scope_does_not_pass_blocked_groups(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_BLOCKED_GROUPS='["contractors-*"]')
    edited = without_scope(browser.start(), "groups")
    assert "groups" not in dict(parse_qsl(urlsplit(edited).query))["scope"]
    assert refusal_code(browser.get(browser.authorize(edited, "mallory"))) == "provider_scope"
    assert browser.app.get("/api/v1/auths/").status_code == 401
    # A provider that sends no groups claim at all (erin has none) is refused the same way.
    assert refusal_code(browser.sign_in(login="erin")) == "oauth_groups_missing"
    assert browser.sign_in(login="alice").headers["location"] == "/"  # with the claim: fine


@pytest.fixture
def frank(oidc_issuer: str) -> Iterator[None]:
    """frank, a member of ai-users at the provider (restored afterwards)."""
    set_account(oidc_issuer, "frank", FRANK)
    yield
    set_account(oidc_issuer, "frank", FRANK)


@pytest.mark.usefixtures("frank")
def test_a_person_moved_out_of_a_group_keeps_no_stored_groups(
    sso: Callable[..., Browser], oidc_issuer: str
) -> None:
    browser = sso(
        ENABLE_OAUTH_SIGNUP="true",
        ENABLE_OAUTH_GROUP_MANAGEMENT="true",
        DEFAULT_USER_ROLE="user",
        OLLAMA_BASE_URL="http://127.0.0.1:9",  # nothing listens: admitted requests end in 502
        OLLAMA_ALLOWED_GROUPS="ai-users",
    )
    app = browser.app
    signup(app, "root@example.test")
    assert browser.sign_in(login="frank").headers["location"] == "/"
    frank_id = me(app)["id"]
    assert app.get("/ollama/api/tags").status_code == 502  # admitted: a member of ai-users

    set_account(oidc_issuer, "frank", {**FRANK, "groups": ["staff"]})  # moved out at the provider
    edited = without_scope(browser.start(), "groups")
    assert refusal_code(browser.get(browser.authorize(edited, "frank"))) == "provider_scope"
    assert linking.user_groups(gateway_of(app).sessions, frank_id) == []
    assert app.get("/ollama/api/tags").status_code == 403  # the session already open: refused too
    assert browser.sign_in(login="frank").headers["location"] == "/"
    assert linking.user_groups(gateway_of(app).sessions, frank_id) == ["staff"]
    assert app.get("/ollama/api/tags").status_code == 403


# --- item 14: folded addresses, xms_edov, tokens of revoked sessions --------------------------------


def test_addresses_that_fold_to_another_never_merge(
    two_providers: Callable[..., Browser], idp: FakeIdP
) -> None:
    browser = two_providers(ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    app = browser.app
    signup(app, "root@example.test")
    idp.claims = {"sub": "g-karl", "email": "karl@example.test", "email_verified": True, "name": "Karl"}
    assert browser.sign_in("google").headers["location"] == "/"  # karl's account, address proven
    karl = me(app)["id"]
    for login in ("kelvin", "wide"):  # "\u212aarl@example.test", "karl@<full-width example>.test"
        assert refusal_code(browser.sign_in(login=login)) == "oauth_email_unsupported"
    assert identities(app) == [("google", "g-karl", karl)]


def test_the_domain_check_matches_the_exact_address(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true", OAUTH_ALLOWED_DOMAINS="example.test")
    for login in ("kelvin", "wide"):
        assert refusal_code(browser.sign_in(login=login)) == "oauth_domain"
    with gateway_of(browser.app).sessions() as db:
        assert db.scalars(select(User.email)).all() == []  # no karl@example.test was made
    # xms_edov vouches for an address at Microsoft only; here it is just a claim mallet added.
    assert refusal_code(browser.sign_in(login="mallet")) == "oauth_domain_unverified"


def test_signing_out_an_ended_session_hands_out_no_id_token(sso: Callable[..., Browser]) -> None:
    browser = sso(ENABLE_OAUTH_SIGNUP="true")
    app = browser.app
    browser.sign_in(login="alice")
    first = app.cookies.get("token")
    assert first and provider_tokens(app)
    assert app.post("/api/v1/auths/sessions/revoke").status_code == 200  # sign out everywhere
    assert provider_tokens(app) == []  # gone with the sessions
    app.cookies.clear()
    answer = app.post("/api/v1/auths/signout", headers=bearer(first))
    assert answer.status_code == 200 and answer.json()["redirect_url"] is None

    # A session ended by a write this process did not see (another instance, an older release):
    # revocation is checked before the ID token is handed out.
    browser.sign_in(login="alice")
    second = app.cookies.get("token")
    (session_id,) = provider_tokens(app)
    with gateway_of(app).engine.begin() as db:
        db.execute(text("UPDATE auth_sessions SET revoked_at = 1 WHERE id = :id"), {"id": session_id})
    app.cookies.clear()
    answer = app.post("/api/v1/auths/signout", headers=bearer(second or ""))
    assert answer.json()["redirect_url"] is None
    assert provider_tokens(app) == []


def test_an_account_holds_one_identity_per_issuer_even_when_two_links_race(
    sso: Callable[..., Browser],
) -> None:
    """Review finding: two links started together each passed the "already linked here?" check."""
    browser = sso()
    app = browser.app
    signup(app, "root@example.test")
    dave = signup(app, "dave@example.test")
    sessions = gateway_of(app).sessions
    first = linking.ProviderIdentity(
        "oidc", "https://idp.example.test", "dave", "dave@example.test", True, "Dave"
    )
    second = replace(first, subject="mallory")
    assert linking._insert_identity(first, dave["id"], sessions) == dave["id"]
    with pytest.raises(PermissionDeniedError) as refused:  # the unique index decides, whatever the timing
        linking._insert_identity(second, dave["id"], sessions)
    assert refused.value.code == "oauth_link_taken"
    assert [sub for _, sub, _ in identities(app)] == ["dave"]


def test_an_identity_joins_a_password_account_only_after_its_sessions_ended(
    sso: Callable[..., Browser], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: the identity was stored first and the sessions ended after; when ending them
    failed, the identity stayed linked beside the old password sessions and keys."""
    browser = sso()
    app = browser.app
    signup(app, "root@example.test")
    dave = signup(app, "dave@example.test")
    password_session(app, "dave@example.test")
    url = start_link(app)

    def store_down(user_id: str, *, actor: str | None = None) -> None:
        raise StoreUnavailableError("database unavailable")

    monkeypatch.setattr(gateway_of(app).accounts, "revoke_all_sessions", store_down)
    assert browser.get(browser.authorize(url, "dave")).status_code == 503
    assert identities(app) == []  # nothing joined while the old sessions live
    assert app.get("/api/v1/auths/", headers=bearer(dave["token"])).status_code == 200
