"""Refusals that need a misbehaving provider (tests/fakes/idp.py): every one ends at
`/auth?error=<readable message>`, and none signs anyone in."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tests.fakes.idp import FakeIdP
from tests.oauth.conftest import Browser, error_of, fake_env, gateway_of, refusal_code
from wardgate.identity.records import UserChanges
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.oauth import flow, linking
from wardgate.oauth.metadata import UNREACHABLE
from wardgate.oauth.state import STATE_USED
from wardgate.sessions.registry import UserState
from wardgate.storage.models import AuditEvent, OAuthIdentity

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]
ALICE = {"sub": "alice-1", "email": "alice@example.test", "email_verified": True, "name": "Alice"}


@pytest.fixture
def browser(make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser) -> Browser:
    """A browser at a wardgate whose generic provider is the fake one (sign-up on)."""
    idp.claims = dict(ALICE)
    return browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true")))


def signed_in(browser: Browser) -> bool:
    """Whether the browser holds a working session."""
    return browser.app.get("/api/v1/auths/").status_code == 200


def test_the_fake_provider_happy_path(browser: Browser, idp: FakeIdP) -> None:
    response = browser.sign_in()
    assert response.headers["location"] == "/" and signed_in(browser)
    exchange = idp.token_requests[0]
    assert exchange["grant_type"] == "authorization_code" and len(exchange["code_verifier"]) >= 43


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong_nonce",
        "no_nonce",
        "bad_signature",
        "unknown_kid",
        "wrong_aud",
        "wrong_iss",
        "expired",
        "garbled",
    ],
)
def test_an_id_token_that_does_not_verify_is_refused(browser: Browser, idp: FakeIdP, tamper: str) -> None:
    idp.tamper = {tamper}
    assert error_of(browser.sign_in()) == flow.TOKEN_INVALID
    assert not signed_in(browser)


def test_userinfo_about_someone_else_is_refused(browser: Browser, idp: FakeIdP) -> None:
    idp.tamper = {"userinfo_other_sub"}  # OIDC Core §5.3.2
    assert error_of(browser.sign_in()) == flow.TOKEN_INVALID


@pytest.mark.parametrize("tamper", ["wrong_iss_param", "no_iss_param"])
def test_a_response_naming_another_issuer_is_refused(browser: Browser, idp: FakeIdP, tamper: str) -> None:
    idp.tamper = {tamper}  # RFC 9207 mix-up defence; the provider announced the parameter
    assert error_of(browser.sign_in()) == flow.ISSUER_MISMATCH
    assert idp.token_requests == []  # refused before the code was even used


def test_the_provider_denying_consent_reads_well(browser: Browser) -> None:
    authorize = browser.start()
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    response = browser.get(
        f"/oauth/oidc/callback?error=access_denied&state={state}&error_description=<script>"
    )
    assert error_of(response) == "The sign-in provider did not complete the sign-in."


def test_a_code_for_another_verifier_is_refused(browser: Browser, idp: FakeIdP) -> None:
    first = browser.authorize(browser.start())
    code = parse_qs(urlsplit(first).query)["code"][0]
    second = browser.authorize(browser.start())  # this browser's pending sign-in is now the second
    state = parse_qs(urlsplit(second).query)["state"][0]
    replay = f"/oauth/oidc/callback?code={code}&state={state}&iss={idp.base}/oidc"
    assert error_of(browser.get(replay)) == flow.CODE_REFUSED
    assert idp.token_requests[-1]["code"] == code  # the provider said no (PKCE mismatch)


def test_an_unreachable_provider_is_a_readable_refusal(
    make_client: MakeClient, browser_for: MakeBrowser
) -> None:
    env = {
        "OAUTH_CLIENT_ID": "x",
        "OAUTH_CLIENT_SECRET": "y",
        "OPENID_PROVIDER_URL": "http://127.0.0.1:9/.well-known/openid-configuration",
    }
    browser = browser_for(make_client(**env))
    assert error_of(browser.get("/oauth/oidc/login")) == UNREACHABLE


@pytest.mark.parametrize("tamper", ["discovery_wrong_issuer", "discovery_insecure_endpoint"])
def test_an_untrustworthy_discovery_document_is_refused(browser: Browser, idp: FakeIdP, tamper: str) -> None:
    idp.tamper = {tamper}  # OIDC Discovery §4.3; endpoints must use TLS
    assert error_of(browser.get("/oauth/oidc/login")) == UNREACHABLE


def test_unknown_provider_is_404(browser: Browser, make_client: MakeClient) -> None:
    for path in ("/oauth/google/login", "/oauth/google/callback", "/oauth/nope/login/callback"):
        response = browser.get(path)
        assert (
            response.status_code == 404
            and response.json()["detail"] == "Unknown or disabled sign-in provider."
        )
    plain = make_client()  # no provider configured at all
    assert plain.get("/oauth/oidc/login", follow_redirects=False).status_code == 404
    assert plain.get("/api/config").json()["oauth"] == {"providers": {}}


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\r\nSet-Cookie:x=y",
        "/ok\tpath",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_open_redirects_are_refused(browser: Browser, target: str) -> None:
    callback = browser.authorize(browser.start(redirect=quote(target, safe="")))
    response = browser.get(callback)
    assert response.status_code == 302 and response.headers["location"] == "/"


def test_same_site_paths_are_kept(browser: Browser) -> None:
    response = browser.get(browser.authorize(browser.start(redirect="/c/123%3Fa%3D1")))
    assert response.headers["location"] == "/c/123?a=1"


def test_every_refusal_forgets_the_pending_sign_in(browser: Browser, idp: FakeIdP) -> None:
    idp.tamper = {"bad_signature"}
    response = browser.sign_in()
    assert error_of(response) == flow.TOKEN_INVALID
    assert any(
        c.startswith("wardgate_oauth=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie")
    )
    assert response.headers["cache-control"] == "no-store"


def test_a_disabled_account_cannot_sign_in(browser: Browser, idp: FakeIdP) -> None:
    browser.sign_in()  # alice: the first account, admin
    admin = browser.app.get("/api/v1/auths/").json()
    idp.claims = {"sub": "bob-1", "email": "bob@example.test", "email_verified": True, "name": "Bob"}
    browser.sign_in()
    bob = browser.app.get("/api/v1/auths/").json()
    assert bob["role"] == "pending"
    accounts = gateway_of(browser.app).accounts
    actor = UserState.from_row(accounts.get_user(admin["id"]))
    accounts.update_user(actor, bob["id"], UserChanges(active=False))
    assert error_of(browser.sign_in()) == ACCOUNT_DISABLED


def test_no_email_no_account(browser: Browser, idp: FakeIdP) -> None:
    idp.claims = {"sub": "anonymous"}
    assert error_of(browser.sign_in()) == linking.NO_EMAIL


def test_role_claims_are_reapplied_but_never_demote_the_last_admin(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, ENABLE_OAUTH_SIGNUP="true", ENABLE_OAUTH_ROLE_MANAGEMENT="true")
    browser = browser_for(make_client(**env))
    idp.claims = {**ALICE, "roles": ["user"]}
    browser.sign_in()  # the first account is the admin, whatever the claims say
    assert browser.app.get("/api/v1/auths/").json()["role"] == "admin"
    browser.sign_in()  # re-applied: "user", but the only admin keeps the role
    assert browser.app.get("/api/v1/auths/").json()["role"] == "admin"
    idp.claims = {"sub": "bob-1", "email": "bob@example.test", "email_verified": True, "roles": ["admin"]}
    browser.sign_in()
    assert browser.app.get("/api/v1/auths/").json()["role"] == "admin"  # granted by the claim
    idp.claims = {**ALICE, "roles": ["user"]}
    browser.sign_in()  # now another admin exists: alice is demoted as her claims say
    assert browser.app.get("/api/v1/auths/").json()["role"] == "user"
    idp.claims = {**ALICE, "roles": "guest"}
    assert error_of(browser.sign_in()) == linking.ROLE_NOT_ALLOWED


def test_sign_in_and_replay_on_every_database(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser, database_url: str
) -> None:
    idp.claims = dict(ALICE)
    browser = browser_for(make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true", DATABASE_URL=database_url)))
    callback = browser.authorize(browser.start())
    sealed = browser.app.cookies.get("wardgate_oauth")
    assert browser.get(callback).headers["location"] == "/" and signed_in(browser)
    replay = browser.app.get(
        callback.removeprefix("http://testserver"),
        headers={"cookie": f"wardgate_oauth={sealed}"},
        follow_redirects=False,
    )
    assert error_of(replay) == STATE_USED
    browser.sign_in()  # the same identity again: the same account, not a second one
    with gateway_of(browser.app).sessions() as db:
        assert db.scalar(select(func.count()).select_from(OAuthIdentity)) == 1


@pytest.mark.parametrize("provider", ["oidc", "google", "github"])
def test_a_narrowed_grant_is_refused(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser, provider: str
) -> None:
    browser = browser_for(make_client(**fake_env(idp, provider, ENABLE_OAUTH_SIGNUP="true")))
    idp.claims = {**ALICE, "id": 77}
    idp.emails = [{"email": "alice@example.test", "primary": True, "verified": True}]
    assert browser.sign_in(provider).headers["location"] == "/"  # Google's URL names, GitHub's commas
    idp.tamper = {"narrow_scope"}
    assert refusal_code(browser.sign_in(provider)) == "provider_scope"


def test_a_missing_groups_claim_is_refused_when_a_rule_needs_groups(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    # The fake provider names no granted scope: only the claim rule can tell.
    env = fake_env(idp, ENABLE_OAUTH_SIGNUP="true", OPENAI_ALLOWED_GROUPS="ml")
    browser = browser_for(make_client(**env))
    for claims in (dict(ALICE), {**ALICE, "groups": {"odd": "shape"}}, {**ALICE, "groups": None}):
        idp.claims = claims
        assert refusal_code(browser.sign_in()) == "oauth_groups_missing"
    idp.claims = {**ALICE, "groups": []}  # present, and empty: a member of no group
    assert browser.sign_in().headers["location"] == "/"


def test_a_missing_groups_claim_drops_the_stored_groups(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, ENABLE_OAUTH_SIGNUP="true", ENABLE_OAUTH_GROUP_MANAGEMENT="true")
    browser = browser_for(make_client(**env))
    idp.claims = {**ALICE, "groups": ["ml", "staff"]}
    browser.sign_in()
    user_id = browser.app.get("/api/v1/auths/").json()["id"]
    sessions = gateway_of(browser.app).sessions
    assert linking.user_groups(sessions, user_id) == ["ml", "staff"]
    idp.claims = dict(ALICE)
    assert refusal_code(browser.sign_in()) == "oauth_groups_missing"
    assert linking.user_groups(sessions, user_id) == []
    assert browser.app.get("/api/v1/auths/").status_code == 200  # the open session stays, groupless


def test_xms_edov_vouches_only_at_microsoft(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    env = fake_env(idp, ENABLE_OAUTH_SIGNUP="true", OAUTH_ALLOWED_DOMAINS="example.test")
    browser = browser_for(make_client(**env))
    idp.claims = {"sub": "m-1", "email": "mallory@example.test", "xms_edov": True}
    assert refusal_code(browser.sign_in()) == "oauth_domain_unverified"


def test_no_account_is_made_from_an_address_that_folds(browser: Browser, idp: FakeIdP) -> None:
    idp.claims = {**ALICE, "email": "\u212aarl@example.test"}
    assert refusal_code(browser.sign_in()) == "oauth_email_unsupported"
    with gateway_of(browser.app).sessions() as db:
        assert db.scalar(select(func.count()).select_from(OAuthIdentity)) == 0
    idp.claims = {**ALICE, "email": " Alice@Example.TEST "}  # ASCII: trimmed and lower-cased
    assert browser.sign_in().headers["location"] == "/"
    assert browser.app.get("/api/v1/auths/").json()["email"] == "alice@example.test"


def test_a_second_state_cookie_planted_from_a_sibling_site_finishes_nothing(
    browser: Browser, idp: FakeIdP
) -> None:
    """Login CSRF by cookie tossing: a sibling site sets its own `wardgate_oauth` (the attacker's
    sign-in, begun in the attacker's browser) beside the victim's, and sends the victim to the
    attacker's callback. Starlette keeps the later value: the victim's browser was signed in as the
    attacker (found by review). Two values are refused, as two session cookies are."""
    app = browser.app
    idp.claims = {"sub": "mallory-1", "email": "mallory@example.test", "email_verified": True, "name": "M"}
    attackers = app.get("/oauth/oidc/login", follow_redirects=False)
    planted = app.cookies["wardgate_oauth"]
    callback = browser.authorize(attackers.headers["location"])
    app.cookies.clear()
    app.get("/oauth/oidc/login", follow_redirects=False)  # the victim's own sign-in, begun
    own = app.cookies["wardgate_oauth"]
    app.cookies.clear()
    cookies = f"wardgate_oauth={own}; wardgate_oauth={planted}"
    refused = app.get(
        callback.removeprefix(browser.base), headers={"cookie": cookies}, follow_redirects=False
    )
    assert refusal_code(refused) == "oauth_state_mismatch"
    assert "token=" not in refused.headers.get("set-cookie", "")
    with gateway_of(app).sessions() as db:
        assert db.scalars(select(OAuthIdentity)).all() == []  # nobody signed in, nothing linked


def test_forged_callbacks_are_one_audit_row_per_address_and_window(browser: Browser) -> None:
    """A callback without a sign-in begun (no state cookie) is anyone's to send: each wrote an audit
    row, kept 90 days (500 a second from one client, found by review)."""
    app = browser.app
    for i in range(20):
        refused = app.get(f"/oauth/oidc/callback?state=x{i}&code=y", follow_redirects=False)
        assert refusal_code(refused) == "oauth_state_missing"
    with gateway_of(app).sessions() as db:
        rows = db.scalars(select(AuditEvent).where(AuditEvent.event == "auth.signin")).all()
    assert [(row.outcome, row.detail) for row in rows] == [("refused", "oauth_state_missing")]
