"""OpenID Connect Back-Channel Logout: logout tokens signed with the fake provider's key, each check
of §2.6 tried and refused; and the real oidc-provider ending a person's session at the provider."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from tests.conftest import SECRET
from tests.fakes.idp import CLIENT_ID, FakeIdP
from tests.mfa.conftest import totp_code
from tests.oauth.conftest import Browser, fake_env, oidc_env, running_oidc_provider
from tests.servers import free_port, wardgate_process
from wardgate.oauth.backchannel import EVENT

MakeClient = Callable[..., TestClient]
MakeBrowser = Callable[[TestClient], Browser]
LOGOUT = "/oauth/oidc/backchannel-logout"


def logout_token(
    idp: FakeIdP, *, key: RSAKey | None = None, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": idp.issuer("oidc"),
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "events": {EVENT: {}},
        **claims,
    }
    signing = key or idp.key
    head = {"alg": "RS256", "kid": signing.kid or "k1", "typ": "logout+jwt", **(header or {})}
    return jwt.encode(head, {k: v for k, v in body.items() if v is not None}, signing)


@pytest.fixture
def signed_in(make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser) -> tuple[Browser, Browser]:
    """Two people signed in through the fake provider, in provider sessions sid-a and sid-b."""
    app = make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true"))
    people = []
    for sub, sid in (("a-1", "sid-a"), ("b-2", "sid-b")):
        browser = browser_for(app)
        idp.claims = {
            "sub": sub,
            "sid": sid,
            "email": f"{sub}@example.test",
            "email_verified": True,
            "name": sub,
        }
        assert browser.sign_in().status_code == 302
        browser.token = app.cookies["token"]  # type: ignore[attr-defined]
        app.cookies.clear()
        people.append(browser)
    return people[0], people[1]


def _me(browser: Browser) -> int:
    return browser.app.get("/api/v1/auths/", headers={"authorization": f"Bearer {browser.token}"}).status_code  # type: ignore[attr-defined]


def _post(browser: Browser, token: str) -> httpx.Response:
    return browser.app.post(LOGOUT, data={"logout_token": token})


def test_a_logout_by_sid_ends_that_session_only(signed_in: tuple[Browser, Browser], idp: FakeIdP) -> None:
    alice, bob = signed_in
    answer = _post(alice, logout_token(idp, sid="sid-a"))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert _me(alice) == 401 and _me(bob) == 200


def test_a_logout_by_sub_ends_every_session_of_that_person(
    signed_in: tuple[Browser, Browser], idp: FakeIdP
) -> None:
    alice, bob = signed_in
    assert _post(alice, logout_token(idp, sub="b-2")).status_code == 200
    assert _me(bob) == 401 and _me(alice) == 200


def test_a_token_is_accepted_once(signed_in: tuple[Browser, Browser], idp: FakeIdP) -> None:
    alice, _ = signed_in
    token = logout_token(idp, sid="sid-a")
    assert _post(alice, token).status_code == 200
    assert _post(alice, token).status_code == 400


@pytest.mark.parametrize(
    ("change", "header"),
    [
        ({"nonce": "n"}, None),  # an ID token passed off as a logout token
        ({"events": None}, None),
        ({"events": {"http://schemas.openid.net/event/other": {}}}, None),
        ({"aud": "someone-else"}, None),
        ({"iss": "https://evil.example"}, None),
        ({"iat": int(time.time()) - 3600, "exp": None}, None),
        ({"iat": None}, None),
        ({"jti": None}, None),
        ({"sid": None, "sub": None}, None),
        ({"exp": int(time.time()) - 600}, None),
        ({}, {"typ": "JWT+at"}),
    ],
)
def test_every_check_refuses(
    signed_in: tuple[Browser, Browser], idp: FakeIdP, change: dict[str, Any], header: dict[str, Any] | None
) -> None:
    alice, _ = signed_in
    claims = {"sid": "sid-a", **change}
    answer = _post(alice, logout_token(idp, header=header, **claims))
    assert answer.status_code == 400 and set(answer.json()) == {"detail"}
    assert _me(alice) == 200


def test_a_foreign_signature_or_garbage_is_refused(signed_in: tuple[Browser, Browser], idp: FakeIdP) -> None:
    alice, _ = signed_in
    assert _post(alice, logout_token(idp, key=idp.other_key, sid="sid-a")).status_code == 400
    assert _post(alice, "not-a-jwt").status_code == 400
    assert alice.app.post(LOGOUT, data={}).status_code == 400
    assert alice.app.post("/oauth/nope/backchannel-logout", data={"logout_token": "x"}).status_code == 404
    assert _me(alice) == 200


def test_unknown_keys_do_not_flood_the_provider(signed_in: tuple[Browser, Browser], idp: FakeIdP) -> None:
    alice, _ = signed_in
    before = idp.jwks_fetches
    stranger = RSAKey.generate_key(2048, parameters={"kid": "made-up"})
    for _ in range(20):
        assert _post(alice, logout_token(idp, key=stranger, sid="sid-a")).status_code == 400
    assert idp.jwks_fetches - before <= 1


def test_with_another_subject_claim_the_sid_decides(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    app = make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true", OAUTH_SUB_CLAIM="email"))
    browser = browser_for(app)
    idp.claims = {"sub": "a-1", "sid": "sid-a", "email": "a@example.test", "email_verified": True}
    assert browser.sign_in().status_code == 302
    token = app.cookies["token"]
    app.cookies.clear()
    assert _post(browser, logout_token(idp, sub="a-1")).status_code == 200  # sub alone: not ours
    assert app.get("/api/v1/auths/", headers={"authorization": f"Bearer {token}"}).status_code == 200
    assert _post(browser, logout_token(idp, sub="a-1", sid="sid-a")).status_code == 200
    assert app.get("/api/v1/auths/", headers={"authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.slow
def test_the_real_provider_ends_the_wardgate_session(tmp_path: Any) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_oidc_provider(base, backchannel=True) as issuer:
        env = {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": SECRET,
            "PORT": str(port),
            "WEBUI_URL": base,
            "ENABLE_OAUTH_SIGNUP": "true",
            **oidc_env(issuer),
        }
        with (
            wardgate_process(env),
            httpx.Client(base_url=base, headers={"origin": base}) as alice_app,
            httpx.Client(base_url=base, headers={"origin": base}) as dave_app,
        ):
            alice, dave = Browser(alice_app, base=base), Browser(dave_app, base=base)
            assert alice.sign_in(login="alice").status_code == 302
            assert dave.sign_in(login="dave").status_code == 302
            assert alice_app.get("/api/v1/auths/").status_code == 200
            # Alice signs out at the provider (its own page), not at wardgate.
            page = alice.web.get(f"{issuer}/session/end")
            xsrf = page.text.split('name="xsrf" value="')[1].split('"')[0]
            confirm = alice.web.post(f"{issuer}/session/end/confirm", data={"xsrf": xsrf, "logout": "yes"})
            assert confirm.status_code in (302, 303)
            deadline = time.monotonic() + 2
            while alice_app.get("/api/v1/auths/").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert alice_app.get("/api/v1/auths/").status_code == 401
            assert dave_app.get("/api/v1/auths/").status_code == 200
            alice.close()
            dave.close()


def test_a_second_step_still_open_for_that_provider_session_ends_too(
    make_client: MakeClient, idp: FakeIdP, browser_for: MakeBrowser
) -> None:
    app = make_client(**fake_env(idp, ENABLE_OAUTH_SIGNUP="true"))
    browser = browser_for(app)
    idp.claims = {"sub": "a-1", "sid": "sid-a", "email": "a@example.test", "email_verified": True}
    assert browser.sign_in().status_code == 302
    secret = app.post("/api/v1/auths/mfa/totp/setup").json()["secret"]
    assert app.post("/api/v1/auths/mfa/totp/enable", json={"code": totp_code(secret)}).status_code == 200
    app.post("/api/v1/auths/signout")
    app.cookies.clear()
    browser.sign_in()  # the account's own factor is asked: a pending sign-in, tagged sid-a
    pending = app.cookies["wardgate_mfa"]
    assert _post(browser, logout_token(idp, sid="sid-a")).status_code == 200
    code = totp_code(secret, steps_ahead=1)
    refused = app.post("/api/v1/auths/mfa/verify", json={"mfa_token": pending, "code": code})
    assert refused.status_code == 400
