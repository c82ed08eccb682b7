"""Provider tokens at rest: encrypted (MultiFernet), rotatable, dropped when undecryptable, refreshed
before they expire."""

from __future__ import annotations

import html
import time
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, SECRET, bearer, signup
from tests.fakes.idp import FakeIdP
from tests.oauth.conftest import Browser, error_of, fake_env, gateway_of
from wardgate.config import load_settings
from wardgate.oauth import flow
from wardgate.oauth.presets import token_keys
from wardgate.oauth.service import SignOn
from wardgate.oauth.token_store import ProviderTokens
from wardgate.security.keys import OAUTH_TOKENS, fernet_key
from wardgate.storage.models import OAuthToken

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]
CLAIMS = {"sub": "t-1", "email": "t@example.test", "email_verified": True}
K1, K2, K3 = (Fernet.generate_key().decode() for _ in range(3))


def sign_on_of(app: TestClient) -> SignOn:
    """The app's single-sign-on service."""
    sign_on = gateway_of(app).sign_on
    assert sign_on is not None
    return sign_on


def stored(app: TestClient) -> OAuthToken:
    """The one stored token row."""
    with gateway_of(app).sessions() as db:
        return db.scalars(select(OAuthToken)).one()


def signed_in_app(make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP, **env: str) -> TestClient:
    """A wardgate at the fake provider with one SSO session."""
    idp.claims = dict(CLAIMS)
    browser = browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true", **env)))
    assert browser.sign_in().headers["location"] == "/"
    return browser.app


def test_tokens_are_encrypted_at_rest(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = signed_in_app(make_client, browser_for, idp, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=K1)
    row = stored(app)
    (access,) = idp.access  # the only access token the provider issued
    assert access not in row.ciphertext and "access_token" not in row.ciphertext
    assert access.encode() in Fernet(K1.encode()).decrypt(row.ciphertext.encode())
    assert row.provider == "oidc" and row.expires_at is not None


def test_key_rotation_keeps_old_rows_readable(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = signed_in_app(make_client, browser_for, idp, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=K1)
    session_id = stored(app).session_id
    rotated = make_client(**fake_env(idp, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=f"{K2};{K1}"))  # newest first
    tokens = sign_on_of(rotated).tokens.load(session_id)
    assert tokens is not None
    sign_on_of(rotated).tokens.replace(session_id, tokens)  # any write re-encrypts with the newest key
    assert Fernet(K2.encode()).decrypt(stored(app).ciphertext.encode())
    only_new = make_client(**fake_env(idp, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=K2))
    assert sign_on_of(only_new).tokens.load(session_id) == tokens
    lost = make_client(**fake_env(idp, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=K3))
    assert sign_on_of(lost).tokens.load(session_id) is None  # undecryptable: dropped, never guessed
    with gateway_of(lost).sessions() as db:
        assert db.scalars(select(OAuthToken)).all() == []


def test_the_default_key_is_derived_not_the_jwt_secret(tmp_path: object) -> None:
    settings = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET})
    (key,) = token_keys(settings)
    assert key == fernet_key(SECRET, OAUTH_TOKENS) and SECRET.encode() not in key
    assert key != fernet_key(SECRET + "x", OAUTH_TOKENS)
    Fernet(key)  # a valid Fernet key


def test_refresh_before_expiry(make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP) -> None:
    idp.token_lifetime = 60  # inside the five-minute refresh margin
    app = signed_in_app(make_client, browser_for, idp)
    session_id = stored(app).session_id
    sign_on = sign_on_of(app)
    before = sign_on.tokens.load(session_id)
    assert before is not None and before.needs_refresh(before.expires_at or 0)
    portal = app.portal  # type: ignore[attr-defined]
    fresh: ProviderTokens | None = portal.call(sign_on.fresh_tokens, session_id)
    assert fresh is not None and fresh.access_token != before.access_token
    assert fresh.id_token == before.id_token  # kept: a refresh response need not repeat it
    assert fresh.refresh_token and fresh.refresh_token != before.refresh_token  # rotated by the provider
    assert idp.token_requests[-1]["grant_type"] == "refresh_token"
    assert sign_on.tokens.load(session_id) == fresh
    again: ProviderTokens | None = portal.call(sign_on.fresh_tokens, session_id)
    assert again == fresh  # an hour left now: no second refresh
    assert [r["grant_type"] for r in idp.token_requests].count("refresh_token") == 1


@pytest.mark.parametrize("lifetime", [1e300, 10**400], ids=["float", "400-digit-integer"])
def test_a_lifetime_beyond_any_use_is_held_to_ten_years(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP, lifetime: float
) -> None:
    """1e300 seconds: a 301-digit expiry for a 64-bit column (found by review); an integer of 400
    digits is not even a float."""
    idp.token_lifetime = lifetime
    app = signed_in_app(make_client, browser_for, idp)
    row = sign_on_of(app).tokens.load(stored(app).session_id)
    assert row is not None and row.expires_at is not None
    assert 0 < row.expires_at - time.time() <= 10 * 365 * 86400


def test_an_infinite_lifetime_is_a_refused_sign_in_not_an_error(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    """JSON reads 1e999 (or Infinity) as infinity, and Authlib's int() of it raised OverflowError,
    which nothing caught: a 500 in the middle of a sign-in."""
    idp.token_lifetime = float("inf")
    idp.claims = dict(CLAIMS)
    browser = browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true")))
    assert error_of(browser.sign_in()) == flow.CODE_REFUSED


@pytest.mark.parametrize(
    ("lifetime", "kept"), [(float("inf"), False), (10**400, True)], ids=["infinite", "400-digit-integer"]
)
def test_a_refresh_with_a_lifetime_beyond_any_use(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP, lifetime: float, kept: bool
) -> None:
    """At refresh as at sign-in: an infinite lifetime (Authlib's int() raised OverflowError, a 500
    on the request that needed the tokens) is a failed refresh, and a 400-digit one is held to ten
    years."""
    idp.token_lifetime = 60  # inside the refresh margin
    app = signed_in_app(make_client, browser_for, idp)
    session_id = stored(app).session_id
    idp.refresh_lifetime = lifetime
    portal = app.portal  # type: ignore[attr-defined]
    fresh: ProviderTokens | None = portal.call(sign_on_of(app).fresh_tokens, session_id)
    assert idp.token_requests[-1]["grant_type"] == "refresh_token"
    if not kept:
        assert fresh is None and sign_on_of(app).tokens.load(session_id) is None
        return
    assert fresh is not None and fresh.expires_at is not None
    assert 0 < fresh.expires_at - time.time() <= 10 * 365 * 86400
    assert sign_on_of(app).tokens.load(session_id) == fresh


def test_a_failed_refresh_drops_the_tokens(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    idp.token_lifetime = 60
    app = signed_in_app(make_client, browser_for, idp)
    session_id = stored(app).session_id
    idp.refresh.clear()  # the provider revoked the grant
    portal = app.portal  # type: ignore[attr-defined]
    assert portal.call(sign_on_of(app).fresh_tokens, session_id) is None
    assert sign_on_of(app).tokens.load(session_id) is None


def test_tokens_end_with_the_session(make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP) -> None:
    app = signed_in_app(make_client, browser_for, idp)
    assert app.post("/api/v1/auths/signout").status_code == 200
    with gateway_of(app).sessions() as db:
        assert db.scalars(select(OAuthToken)).all() == []
    assert idp.logouts == []  # the browser, not wardgate, visits the provider's end-session URL


def test_tokens_of_ended_sessions_are_dropped_at_the_next_sign_in(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = signed_in_app(make_client, browser_for, idp)
    old = stored(app).session_id
    assert app.delete(f"/api/v1/auths/sessions/{old}").status_code == 200  # signed out from elsewhere
    browser = browser_for(app)
    browser.sign_in()
    with gateway_of(app).sessions() as db:
        rows = db.scalars(select(OAuthToken.session_id)).all()
    assert len(rows) == 1 and rows[0] != old


def test_at_most_ten_sessions_keep_provider_tokens(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = signed_in_app(make_client, browser_for, idp)
    browser = browser_for(app)
    for _ in range(11):
        browser.sign_in()
    with gateway_of(app).sessions() as db:
        assert len(db.scalars(select(OAuthToken.session_id)).all()) == 10


def test_tokens_end_with_every_way_sessions_end(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true"))
    admin = signup(app, "admin@example.test")
    browser = browser_for(app)

    def signed_in_with_tokens() -> str:
        idp.claims = dict(CLAIMS)
        assert browser.sign_in().headers["location"] == "/"
        with gateway_of(app).sessions() as db:
            assert db.scalars(select(OAuthToken)).all() != []
        user_id: str = app.get("/api/v1/auths/").json()["id"]
        return user_id

    def stored_tokens() -> list[OAuthToken]:
        with gateway_of(app).sessions() as db:
            return list(db.scalars(select(OAuthToken)))

    user_id = signed_in_with_tokens()
    revoked = app.post(f"/api/v1/users/{user_id}/sessions/revoke", headers=bearer(admin["token"]))
    assert revoked.status_code == 200 and stored_tokens() == []  # an administrator's revocation

    signed_in_with_tokens()
    disable = app.post(
        f"/api/v1/users/{user_id}/update", json={"active": False}, headers=bearer(admin["token"])
    )
    assert disable.status_code == 200 and stored_tokens() == []  # a disabled account
    app.post(f"/api/v1/users/{user_id}/update", json={"active": True}, headers=bearer(admin["token"]))

    signed_in_with_tokens()
    assert app.delete(f"/api/v1/auths/sessions/{stored_tokens()[0].session_id}").status_code == 200
    assert stored_tokens() == []  # one session signed out from the session list


def test_tokens_end_with_a_password_change(
    make_client: MakeClient, browser_for: MakeBrowser, idp: FakeIdP
) -> None:
    app = make_client(**fake_env(idp))
    signup(app, "admin@example.test")
    signup(app, "t@example.test")
    assert app.post("/api/v1/auths/signin", json={"email": "t@example.test", "password": PASSWORD}).is_success
    linking = app.post("/oauth/oidc/link", data={"password": PASSWORD})  # from the account page
    provider_url = html.unescape(linking.text.split('<a class="button" href="')[1].split('"')[0])
    idp.claims = dict(CLAIMS)
    browser = browser_for(app)
    assert browser.get(browser.authorize(provider_url)).headers["location"].startswith("/account?notice=")
    assert stored(app).provider == "oidc"  # the new single-sign-on session's tokens
    changed = app.post(
        "/api/v1/auths/update/password", json={"password": PASSWORD, "new_password": PASSWORD + "-new"}
    )
    assert changed.status_code == 200
    with gateway_of(app).sessions() as db:
        assert db.scalars(select(OAuthToken)).all() == []
