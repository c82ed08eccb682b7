"""Single sign-on and wardgate's second factors: the provider's `amr`/`acr` counts as one; without
it, an account with a factor of wardgate's shows that factor before any session exists."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from starlette.testclient import TestClient

from tests.fakes.idp import FakeIdP
from tests.mfa.conftest import MFA, totp_code
from tests.oauth.conftest import Browser, fake_env, gateway_of, refusal_code
from wardgate.storage.models import OAuthIdentity

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]
ALICE = {"sub": "a-1", "email": "alice@example.test", "email_verified": True, "name": "Alice"}


def _enrol(browser: Browser) -> str:
    """Set up an authenticator app in the browser's session; its secret."""
    secret: str = browser.app.post(f"{MFA}/totp/setup").json()["secret"]
    assert browser.app.post(f"{MFA}/totp/enable", json={"code": totp_code(secret)}).status_code == 200
    return secret


def _sign_out(browser: Browser) -> None:
    browser.app.post("/api/v1/auths/signout")
    browser.app.cookies.clear()


def test_without_the_provider_word_the_account_factor_is_asked(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    browser = browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true")))
    idp.claims = {**ALICE, "amr": ["pwd"]}
    assert browser.sign_in().status_code == 302
    secret = _enrol(browser)
    _sign_out(browser)

    idp.claims = {**ALICE, "amr": ["pwd"]}
    back = browser.sign_in(redirect="/account")
    assert back.headers["location"].startswith("/auth?redirect=/account")
    assert "token=" not in back.headers.get("set-cookie", "")  # no session yet
    pending = browser.app.cookies.get("wardgate_mfa")
    assert pending and browser.app.get("/api/v1/auths/").status_code == 401
    done = browser.app.post(
        f"{MFA}/verify", json={"mfa_token": pending, "code": totp_code(secret, steps_ahead=1)}
    )
    assert done.status_code == 200, done.text
    assert browser.app.get(MFA).json()["step_up_until"] is not None  # the factor was shown here


def test_the_provider_amr_counts_as_the_second_factor(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    browser = browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true")))
    idp.claims = {**ALICE, "amr": ["pwd"]}
    browser.sign_in()
    _enrol(browser)
    _sign_out(browser)
    idp.claims = {**ALICE, "amr": ["pwd", "otp"]}
    back = browser.sign_in()
    assert back.headers["location"] == "/" and "token=" in back.headers["set-cookie"]
    me = browser.app.get("/api/v1/auths/")
    assert me.status_code == 200
    assert gateway_of(browser.app).codec.verify(browser.app.cookies["token"]).mfa


def test_a_required_role_is_satisfied_by_the_provider_acr(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(
        idp, ENABLE_OAUTH_SIGNUP="true", MFA_REQUIRED_ROLES="admin", OAUTH_MFA_ACR_VALUES="urn:example:mfa"
    )
    browser = browser_for(make_client(**env))
    idp.claims = {**ALICE, "acr": "urn:example:basic"}
    browser.sign_in()  # the first account: an admin, without a factor
    assert browser.app.get("/api/v1/users/").status_code == 403
    _sign_out(browser)
    idp.claims = {**ALICE, "acr": "urn:example:mfa"}
    browser.sign_in()
    assert browser.app.get("/api/v1/users/").status_code == 200


def test_a_second_provider_is_never_merged_onto_an_account_with_a_factor(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    """A sign-on takes its provider's `amr` as the second factor, and merging by address took the
    new provider's: one that vouched for the address (self-registration and the mailbox is enough)
    signed in as the person without their factor, and stayed linked (found by review). Linking from
    the account page asks for the factor first."""
    merging = fake_env(idp, "google", ENABLE_OAUTH_SIGNUP="true", OAUTH_MERGE_ACCOUNTS_BY_EMAIL="true")
    browser = browser_for(make_client(**fake_env(idp, "oidc", **merging)))
    idp.claims = {"sub": "g-root", "email": "root@example.test", "email_verified": True, "name": "Root"}
    browser.sign_in("google")  # the first account: the admin
    _sign_out(browser)
    idp.claims = {**ALICE, "sub": "g-alice"}
    browser.sign_in("google")  # alice's account, its address proven by Google
    _enrol(browser)
    _sign_out(browser)

    idp.claims = {**ALICE, "sub": "o-mallory", "amr": ["pwd", "otp"]}
    assert refusal_code(browser.sign_in("oidc")) == "oauth_second_factor_merge"
    assert browser.app.get("/api/v1/auths/").status_code == 401
    with gateway_of(browser.app).sessions() as db:
        assert sorted(db.scalars(select(OAuthIdentity.subject))) == ["g-alice", "g-root"]  # nothing new
