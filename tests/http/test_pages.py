"""The pages in-process: forms, redirects, refusals and the admin actions (the browser tests drive the
same pages in Chromium; these check every branch quickly)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.testclient import TestClient
from tests.conftest import PASSWORD, bearer, signup

FORM = {"content-type": "application/x-www-form-urlencoded"}


def sign_in_form(client: TestClient, email: str, password: str = PASSWORD, redirect: str = "") -> object:
    return client.post(
        "/auth/signin",
        data={"email": email, "password": password, "redirect": redirect},
        follow_redirects=False,
    )


def test_home_and_auth_redirects(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/auth"
    page = client.get("/auth")
    assert page.status_code == 200 and "Create the admin account" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    signup(client, "ada@example.com")
    assert "Sign in to wardgate" in client.get("/auth").text


def test_sign_in_form_sets_the_cookie_and_honours_same_origin_redirects_only(client: TestClient) -> None:
    signup(client, "ada@example.com")
    ok = sign_in_form(client, "ada@example.com", redirect="/admin")
    assert ok.status_code == 303 and ok.headers["location"] == "/admin"
    assert "httponly" in ok.headers["set-cookie"].lower()
    client.cookies.clear()
    for evil in ("https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)"):
        response = sign_in_form(client, "ada@example.com", redirect=evil)
        assert response.headers["location"] == "/account", evil
        client.cookies.clear()


def test_wrong_password_is_shown_with_its_status(client: TestClient) -> None:
    signup(client, "ada@example.com")
    page = sign_in_form(client, "ada@example.com", "wrong-password")
    assert page.status_code == 400  # type: ignore[attr-defined]
    assert "The email or password provided is incorrect" in page.text  # type: ignore[attr-defined]
    assert 'value="ada@example.com"' in page.text  # type: ignore[attr-defined]


def test_rate_limited_sign_in_shows_the_wait(make_client: Callable[..., TestClient]) -> None:
    client = make_client(SIGNIN_RATE_LIMIT="1/1h")
    signup(client, "ada@example.com")
    sign_in_form(client, "ada@example.com", "wrong-password")
    page = sign_in_form(client, "ada@example.com", "wrong-password")
    assert page.status_code == 429  # type: ignore[attr-defined]
    assert "Try again in" in page.text  # type: ignore[attr-defined]


def test_pages_need_a_session_and_admin_needs_an_admin(client: TestClient) -> None:
    redirect = client.get("/account", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/auth?redirect=/account"
    signup(client, "ada@example.com")
    bob = signup(client, "bob@example.com")
    client.cookies.set("token", bob["token"])
    account = client.get("/account")
    assert "waiting for approval" in account.text
    admin = client.get("/admin")
    assert admin.status_code == 403 and "Administrator access is required" in admin.text
    refused = client.post(f"/admin/users/{bob['id']}/role", data={"role": "admin"}, follow_redirects=False)
    assert refused.status_code == 403 and "Administrator access is required" in refused.text


def test_account_actions(client: TestClient) -> None:
    signup(client, "ada@example.com")
    first = sign_in_form(client, "ada@example.com")
    assert first.status_code == 303  # type: ignore[attr-defined]
    other = client.post(
        "/api/v1/auths/signin", json={"email": "ada@example.com", "password": PASSWORD}
    ).json()
    page = client.get("/account")
    assert page.text.count("Sign out the session") == 3  # sign-up, the form and the API
    revoked = client.post("/account/sessions/not-a-session/revoke", follow_redirects=False)
    assert revoked.status_code == 404 and "Session not found." in revoked.text  # on the page, not in a URL
    wrong = client.post(
        "/account/password", data={"password": "nope", "new_password": "x" * 12}, follow_redirects=False
    )
    assert wrong.status_code == 400 and "The current password is incorrect." in wrong.text
    changed = client.post(
        "/account/password", data={"password": PASSWORD, "new_password": "n" * 12}, follow_redirects=False
    )
    assert changed.headers["location"] == "/auth?notice=password"
    assert client.get("/api/v1/auths/", headers=bearer(other["token"])).status_code == 401


def test_admin_actions(client: TestClient) -> None:
    admin = signup(client, "ada@example.com")
    bob = signup(client, "bob@example.com")
    client.cookies.set("token", admin["token"])
    page = client.get("/admin?q=bob")
    assert page.status_code == 200 and "bob@example.com" in page.text and "Pending approval" in page.text
    changes = (("role", {"role": "user"}, "role"), ("disable", {}, "disabled"), ("enable", {}, "enabled"))
    for action, data, said in (*changes, ("revoke", {}, "revoked")):
        done = client.post(f"/admin/users/{bob['id']}/{action}", data=data, follow_redirects=False)
        location = f"/admin?notice={said}&user={bob['id']}#user-{bob['id']}"
        assert done.headers["location"] == location, action
    assert "Every session of bob@example.com has ended" in client.get(location).text
    bad = client.post(f"/admin/users/{bob['id']}/role", data={"role": "root"}, follow_redirects=False)
    assert bad.status_code == 400 and "Role must be one of" in bad.text
    unknown = client.post("/admin/users/not-a-uuid/delete", follow_redirects=False)
    assert unknown.status_code == 404 and "User not found." in unknown.text
    last = client.post(f"/admin/users/{admin['id']}/disable", follow_redirects=False)
    assert last.status_code == 400 and "last administrator" in last.text
    gone = client.post(f"/admin/users/{bob['id']}/delete", follow_redirects=False)
    assert gone.headers["location"].startswith("/admin?notice=deleted")
    events = client.get("/admin").text
    assert "Account deleted" in events and "Role changed" in events  # in words, not codes


def test_page_forms_are_csrf_protected(client: TestClient) -> None:
    admin = signup(client, "ada@example.com")
    bob = signup(client, "bob@example.com")
    client.cookies.set("token", admin["token"])
    forged = client.post(
        f"/admin/users/{bob['id']}/delete", headers={"origin": "https://evil.example"}, follow_redirects=False
    )
    assert forged.status_code == 403 and forged.json()["detail"].startswith("Cross-site request refused")
    login_csrf = client.post(
        "/auth/signin",
        data={"email": "a@example.com", "password": "x"},
        headers={"origin": "https://evil.example"},
    )
    assert login_csrf.status_code == 403


def test_sign_out_form(client: TestClient) -> None:
    signup(client, "ada@example.com")
    sign_in_form(client, "ada@example.com")
    token = client.cookies.get("token")
    out = client.post("/auth/signout", follow_redirects=False)
    assert out.headers["location"] == "/auth?notice=signed-out"
    assert client.get("/api/v1/auths/", headers=bearer(str(token))).status_code == 401
    assert "You are signed out." in client.get("/auth?notice=signed-out").text


def test_static_files_and_robots(client: TestClient) -> None:
    css = client.get("/static/wardgate.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    assert client.get("/robots.txt").text.startswith("User-agent: *")


@pytest.mark.parametrize("page", ["/auth", "/account", "/admin"])
def test_text_from_the_address_never_appears_on_the_genuine_pages(client: TestClient, page: str) -> None:
    """A link to the real site must not put an attacker's words on it (phishing, not XSS)."""
    admin = signup(client, "ada@example.com")
    client.cookies.set("token", admin["token"])
    bait = "Your account is locked. Call +1-555-0100 now"
    for query in (f"error={bait}", f"notice={bait}", f"error=oauth_state_used%20{bait}"):
        shown = client.get(f"{page}?{query}")
        assert bait not in shown.text, query
        assert "Call +1-555" not in shown.text


def test_a_refusal_code_shows_its_fixed_message(client: TestClient) -> None:
    assert "This sign-in response has already been used." in client.get("/auth?error=oauth_state_used").text
    assert "The sign-in could not be completed." in client.get("/auth?error=made_up_code").text


def _multipart(charset: str, fields: dict[str, str]) -> dict[str, object]:
    parts = "".join(
        f'--B\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()
    )
    content_type = f"multipart/form-data; boundary=B; charset={charset}"
    return {"content": (parts + "--B--\r\n").encode(), "headers": {"content-type": content_type}}


SURROGATE = "\\ud800"  # the text a `unicode_escape` charset turns into a lone surrogate
FIELDS = {"email": SURROGATE, "password": SURROGATE, "name": SURROGATE, "logout_token": "t"}
FIELDS |= {"current_password": SURROGATE, "new_password": SURROGATE, "confirm_password": SURROGATE}


@pytest.mark.parametrize("charset", ["undefined", "unicode_escape", "utf-8"])
@pytest.mark.parametrize(
    "path", ["/auth/signin", "/auth/signup", "/oauth/oidc/backchannel-logout", "/account/password"]
)
def test_a_form_is_read_url_encoded_and_nothing_else(client: TestClient, path: str, charset: str) -> None:
    """Starlette's multipart parser decodes fields in the charset the request names: `undefined`
    raised UnicodeError, a 500 before authentication; `unicode_escape` made lone surrogates that the
    password hash and the page could not encode, a 500 too (both found by review)."""
    client.cookies.set("token", signup(client, "ada@example.com")["token"])
    refused = client.post(path, **_multipart(charset, FIELDS), follow_redirects=False)  # type: ignore[arg-type]
    assert refused.status_code == 415 and "application/x-www-form-urlencoded" in refused.text


def test_bytes_of_a_form_that_are_not_utf8_are_text_all_the_same(client: TestClient) -> None:
    """A URL-encoded surrogate (%ED%A0%80 is not UTF-8) is read as U+FFFD: a wrong password, shown
    as such, not an encoding error."""
    signup(client, "ada@example.com")
    body = b"email=ada%40example.com&password=%ED%A0%80"
    page = client.post(
        "/auth/signin", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert page.status_code == 400 and "The email or password provided is incorrect" in page.text
    page = client.post(
        "/auth/signin",
        content=b"email=%ED%A0%80&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert page.status_code == 400 and 'value="\ufffd' in page.text  # shown back as U+FFFD
