"""Google, Microsoft and GitHub presets against the fake provider's copies of their endpoints, and the
redirect URI each instance registers."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from starlette.testclient import TestClient

from tests.conftest import signup
from tests.fakes.idp import TENANT_ID, FakeIdP
from tests.oauth.conftest import Browser, error_of, fake_env, gateway_of
from wardgate.oauth import linking
from wardgate.storage.models import OAuthIdentity

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]


def identities(browser: Browser) -> list[tuple[str, str, str, bool]]:
    """(provider, issuer, subject, email_verified) of every stored identity."""
    with gateway_of(browser.app).sessions() as db:
        rows = db.scalars(select(OAuthIdentity).order_by(OAuthIdentity.created_at))
        return [(r.provider, r.issuer, r.subject, r.email_verified) for r in rows]


def me(browser: Browser) -> dict[str, str]:
    """The signed-in user."""
    response = browser.app.get("/api/v1/auths/")
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def test_google(make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser) -> None:
    browser = browser_for(make_client(**fake_env(idp, "google", ENABLE_OAUTH_SIGNUP="true")))
    assert browser.app.get("/api/config").json()["oauth"]["providers"] == {"google": "Google"}
    idp.claims = {"sub": "1098", "email": "g@example.test", "email_verified": True, "name": "Gee"}
    assert browser.sign_in("google").headers["location"] == "/"
    first = me(browser)["id"]
    idp.tamper = {"google_short_issuer"}  # Google also issues iss=accounts.google.com
    assert browser.sign_in("google").headers["location"] == "/"
    assert me(browser)["id"] == first
    assert identities(browser) == [("google", f"{idp.base}/google", "1098", True)]
    assert (
        browser.app.post("/api/v1/auths/signout")
        .json()["redirect_url"]
        .startswith(f"{idp.base}/google/logout?")
    )


def test_microsoft_tenant_urls_and_xms_edov(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, "microsoft", ENABLE_OAUTH_SIGNUP="true", OAUTH_ALLOWED_DOMAINS="contoso.example")
    browser = browser_for(make_client(**env))
    authorize = browser.start("microsoft")
    assert authorize.startswith(f"{idp.base}/ms/contoso.onmicrosoft.com/v2.0/authorize?")
    # Entra ID sends no email_verified: the email is unproven unless xms_edov says the domain is owned.
    idp.claims = {"sub": "AAAA-oid", "email": "m@contoso.example", "name": "Em"}
    assert error_of(browser.sign_in("microsoft")) == linking.DOMAIN_UNVERIFIED
    idp.claims["xms_edov"] = True
    assert browser.sign_in("microsoft").headers["location"] == "/"
    assert identities(browser) == [
        ("microsoft", f"{idp.base}/ms/contoso.onmicrosoft.com/v2.0", "AAAA-oid", True)
    ]


def test_microsoft_common_tenant_uses_the_token_tenant(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, "microsoft", ENABLE_OAUTH_SIGNUP="true", MICROSOFT_CLIENT_TENANT_ID="common")
    browser = browser_for(make_client(**env))
    idp.claims = {"sub": "BBBB-oid", "email": "x@fabrikam.example", "name": "Ex"}
    assert browser.sign_in("microsoft").headers["location"] == "/"
    assert identities(browser) == [("microsoft", f"{idp.base}/ms/{TENANT_ID}/v2.0", "BBBB-oid", False)]


def test_github_uses_the_verified_primary_email(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, "github", ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    browser = browser_for(make_client(**fake_env(idp, **env)))  # GitHub and the generic provider
    signup(browser.app, "admin@example.test")
    # The account was made through single sign-on with the address verified: its address is proven.
    idp.claims = {"sub": "octo-1", "email": "octo@example.test", "email_verified": True, "name": "Octo"}
    assert browser.sign_in("oidc").headers["location"] == "/"
    octo = me(browser)
    idp.claims = {"id": 4242, "login": "octocat", "name": None, "email": "public@example.test"}
    idp.emails = [
        {"email": "octo@example.test", "primary": True, "verified": True},
        {"email": "admin@example.test", "primary": False, "verified": False},
    ]
    assert browser.sign_in("github").headers["location"] == "/"
    assert me(browser)["id"] == octo["id"]  # merged on the verified primary address
    assert identities(browser) == [
        ("oidc", f"{idp.base}/oidc", "octo-1", True),
        ("github", f"{idp.base}/gh", "4242", True),
    ]
    exchange = idp.token_requests[-1]
    assert exchange["client_secret"] and exchange["code_verifier"]  # client_secret_post and PKCE
    # No end-session endpoint at GitHub: sign-out returns no provider URL.
    assert browser.app.post("/api/v1/auths/signout").json()["redirect_url"] is None


def test_github_unverified_primary_is_not_merged(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, "github", ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    browser = browser_for(make_client(**env))
    signup(browser.app, "admin@example.test")
    signup(browser.app, "octo@example.test")
    idp.claims = {"id": 7, "login": "mallory"}
    idp.emails = [{"email": "octo@example.test", "primary": True, "verified": False}]
    assert error_of(browser.sign_in("github")) == linking.MERGE_UNVERIFIED


def test_signout_redirect_url_without_a_provider_session(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, "github", WEBUI_AUTH_SIGNOUT_REDIRECT_URL="https://portal.example.com/bye")
    app = make_client(**env)
    user = signup(app, "admin@example.test")
    response = app.post("/api/v1/auths/signout", headers={"Authorization": f"Bearer {user['token']}"})
    assert response.json()["redirect_url"] == "https://portal.example.com/bye"


def redirect_uri_of(authorize_url: str) -> str:
    """The redirect_uri parameter of an authorization URL."""
    return parse_qs(urlsplit(authorize_url).query)["redirect_uri"][0]


def test_redirect_uri_sources(make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser) -> None:
    derived = browser_for(make_client(**fake_env(idp)))
    assert redirect_uri_of(derived.start()) == "http://testserver/oauth/oidc/callback"
    site = browser_for(make_client(**fake_env(idp, WEBUI_URL="https://chat.example.com/")))
    assert redirect_uri_of(site.start()) == "https://chat.example.com/oauth/oidc/callback"
    explicit = browser_for(make_client(**fake_env(idp, OPENID_REDIRECT_URI="https://sso.example.com/cb")))
    assert redirect_uri_of(explicit.start()) == "https://sso.example.com/cb"


def test_redirect_uri_behind_a_tls_proxy_is_https(make_client: MakeClient, idp: FakeIdP) -> None:
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "chat.example.com"}
    trusted = make_client(**fake_env(idp, FORWARDED_ALLOW_IPS="*"))
    response = trusted.get("/oauth/oidc/login", headers=forwarded, follow_redirects=False)
    assert redirect_uri_of(response.headers["location"]) == "https://chat.example.com/oauth/oidc/callback"
    state_cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("wardgate_oauth="))
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/oauth", "Max-Age=600"):
        assert attribute in state_cookie
    untrusted = make_client(**fake_env(idp))  # the peer is not a listed proxy: headers ignored
    response = untrusted.get("/oauth/oidc/login", headers=forwarded, follow_redirects=False)
    assert redirect_uri_of(response.headers["location"]) == "http://testserver/oauth/oidc/callback"


def test_authorization_request_parameters(make_client: MakeClient, idp: FakeIdP) -> None:
    app = make_client(**fake_env(idp, OAUTH_SCOPES="openid email"))
    first = parse_qs(urlsplit(app.get("/oauth/oidc/login", follow_redirects=False).headers["location"]).query)
    second = parse_qs(
        urlsplit(app.get("/oauth/oidc/login", follow_redirects=False).headers["location"]).query
    )
    assert first["response_type"] == ["code"] and first["scope"] == ["openid email"]
    assert first["code_challenge_method"] == ["S256"] and len(first["code_challenge"][0]) == 43
    for name in ("state", "nonce", "code_challenge"):
        assert len(first[name][0]) >= 32 and first[name] != second[name]  # fresh every time
