"""Forward-auth decisions in-process: who passes, who is sent to sign in, what the app is told."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, signup
from tests.forward_auth.conftest import WARDGATE, write_rules
from wardgate.config import load_settings
from wardgate.errors import ConfigError

FORWARD = "/api/v1/authz/forward-auth"
NGINX = "/api/v1/authz/auth-request"
HTML = "text/html,application/xhtml+xml"


def ask(client: TestClient, host: str, uri: str, token: str | None = None, **headers: str) -> object:
    sent = {"host": host, "x-forwarded-uri": uri, "x-forwarded-method": "GET", **headers}
    if token:
        sent["authorization"] = f"Bearer {token}"
    return client.get(FORWARD, headers=sent, follow_redirects=False)


def nginx(client: TestClient, url: str, token: str | None = None) -> object:
    sent = {"x-original-url": url, "x-original-method": "GET"}
    if token:
        sent["authorization"] = f"Bearer {token}"
    return client.get(NGINX, headers=sent, follow_redirects=False)


def test_a_signed_in_person_passes_with_identity_headers(guard: TestClient) -> None:
    admin = signup(guard, "admin@example.test", name="Ada Ünal")["token"]
    answer = ask(guard, "app.example.test", "/admin/x?y=1", admin)
    assert answer.status_code == 200  # type: ignore[attr-defined]
    got = answer.headers  # type: ignore[attr-defined]
    assert got["remote-user"] == "admin@example.test" and got["remote-email"] == "admin@example.test"
    assert got["remote-role"] == "admin"
    assert got["remote-name"] == "Ada %C3%9Cnal"  # UTF-8, percent-encoded: no charset to guess


def test_a_browser_without_a_session_is_sent_to_sign_in_and_back(guard: TestClient) -> None:
    answer = ask(guard, "app.example.test", "/chat?id=1", accept=HTML)
    assert answer.status_code == 302  # type: ignore[attr-defined]
    location = answer.headers["location"]  # type: ignore[attr-defined]
    assert location.startswith(f"{WARDGATE}/auth?redirect=")
    back = parse_qs(urlsplit(location).query)["redirect"][0]
    assert back == "https://app.example.test/chat?id=1"
    assert ask(guard, "app.example.test", "/chat").status_code == 401  # type: ignore[attr-defined]
    post = ask(guard, "app.example.test", "/chat", accept=HTML, **{"x-forwarded-method": "POST"})
    assert post.status_code == 401  # type: ignore[attr-defined]


def test_unknown_hosts_are_refused_never_redirected(guard: TestClient) -> None:
    for host in (
        "evil.example.test",
        "app.example.test.evil.test",
        "apps.example.test",
        "login.example.test",
    ):
        answer = ask(guard, host, "/", accept=HTML)
        assert answer.status_code == 403, host  # type: ignore[attr-defined]
        assert "location" not in answer.headers  # type: ignore[attr-defined]


def test_rules_per_path_role_and_group(guard: TestClient) -> None:
    admin = signup(guard, "admin@example.test")["token"]
    user = signup(guard, "user@example.test")["token"]
    assert ask(guard, "app.example.test", "/", user).status_code == 200  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/admin", user).status_code == 403  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/admin/", user).status_code == 403  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/administrator", user).status_code == 200  # type: ignore[attr-defined]
    # Paths another reader could resolve into /admin must pass the site's every rule.
    sneaky_paths = ("/x/../admin", "/%61dmin", "//admin", "/static/../admin", "/static/%2e%2e/admin")
    # `;` parameters (Tomcat, Spring: /static/..;/admin is /admin), `#`, and case (IIS: /ADMIN).
    sneaky_paths += ("/static/..;/admin", "/admin;x=1", "/ADMIN", "/Admin/x", "/static#/../admin")
    for sneaky in sneaky_paths:
        assert ask(guard, "app.example.test", sneaky, user).status_code == 403, sneaky  # type: ignore[attr-defined]
        assert ask(guard, "app.example.test", sneaky, admin).status_code == 200, sneaky  # type: ignore[attr-defined]
    # A group rule: neither has the group.
    assert ask(guard, "x.apps.example.test", "/", admin).status_code == 403  # type: ignore[attr-defined]


def test_public_paths_need_no_session_and_carry_no_identity(guard: TestClient) -> None:
    answer = ask(guard, "app.example.test", "/static/app.js")
    assert answer.status_code == 200  # type: ignore[attr-defined]
    assert answer.headers["remote-user"] == ""  # type: ignore[attr-defined]  # empty: the proxy drops a forged one
    assert ask(guard, "app.example.test", "/static/../admin").status_code == 401  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/static/..;/admin").status_code == 401  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/STATIC/app.js").status_code == 401  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/healthz").status_code == 401  # type: ignore[attr-defined]


def test_revoked_sessions_pending_accounts_and_keys(
    guard: TestClient, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    admin = signup(guard, "admin@example.test")["token"]
    guard.post("/api/v1/auths/signout", headers=bearer(admin))
    assert ask(guard, "app.example.test", "/", admin).status_code == 401  # type: ignore[attr-defined]
    pending_site = make_client(
        base_url=WARDGATE,
        FORWARD_AUTH_FILE=write_rules(tmp_path),
        WEBUI_URL=WARDGATE,
        DEFAULT_USER_ROLE="pending",
    )
    pending = signup(pending_site, "p@example.test")["token"]
    assert "waiting for approval" in ask(pending_site, "app.example.test", "/", pending).json()["detail"]  # type: ignore[attr-defined]


def test_api_keys_only_where_the_site_accepts_them(guard: TestClient) -> None:
    admin = signup(guard, "admin@example.test")["token"]
    key = guard.post("/api/v1/auths/api_keys", json={"name": "k"}, headers=bearer(admin)).json()["api_key"]
    assert ask(guard, "app.example.test", "/", key).status_code == 200  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", "/", "sk-" + "0" * 48).status_code == 401  # type: ignore[attr-defined]
    for upstreams, status in ((["ollama"], 403), (["forward-auth"], 200)):
        scoped = guard.post(
            "/api/v1/auths/api_keys", json={"name": "s", "upstreams": upstreams}, headers=bearer(admin)
        ).json()["api_key"]
        assert ask(guard, "app.example.test", "/", scoped).status_code == status  # type: ignore[attr-defined]
    # A site that does not accept keys refuses even an unscoped one.
    assert ask(guard, "x.apps.example.test", "/", key).status_code == 403  # type: ignore[attr-defined]


def test_nginx_mode_never_redirects(guard: TestClient) -> None:
    answer = nginx(guard, "https://app.example.test/chat?a=1&b=2")
    assert answer.status_code == 401  # type: ignore[attr-defined]
    location = answer.headers["location"]  # type: ignore[attr-defined]  # for nginx's error_page
    assert parse_qs(urlsplit(location).query)["redirect"] == ["https://app.example.test/chat?a=1&b=2"]
    user = signup(guard, "user@example.test")["token"]
    assert nginx(guard, "https://app.example.test/chat", user).status_code == 200  # type: ignore[attr-defined]
    for bad in (
        "",
        "not a url",
        "javascript:alert(1)",
        "https://user@app.example.test/",
        "https://evil.test/",
    ):
        assert nginx(guard, bad, user).status_code == 403, bad  # type: ignore[attr-defined]


def test_off_without_a_rules_file(client: TestClient) -> None:
    assert client.get(FORWARD).status_code == 404
    assert client.get(NGINX).status_code == 404


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ('[[sites]]\nhost = "x.test"\nrole = ["admin"]\n', "unknown key 'role'"),
        ('[[sites]]\nhost = "https://x.test"\n', "host name"),
        ('[[sites]]\nhost = "x.test"\nroles = ["pending"]\n', "unknown role"),
        ('[[sites]]\nhost = "x.test"\npublic = ["/a/../b"]\n', "plain path"),
        ("sites = []\n", "1 to"),
        ('[headers]\nuser = "Remote User"\n[[sites]]\nhost = "x.test"\n', "header name"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_a_bad_rules_file_stops_start_up(tmp_path: Path, rules: str, message: str) -> None:
    env = {
        "DATA_DIR": str(tmp_path),
        "WEBUI_URL": WARDGATE,
        "FORWARD_AUTH_FILE": write_rules(tmp_path, rules),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert "FORWARD_AUTH_FILE" in str(caught.value) and message in str(caught.value)


def test_forward_auth_needs_webui_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WEBUI_URL"):
        load_settings({"DATA_DIR": str(tmp_path), "FORWARD_AUTH_FILE": write_rules(tmp_path)})


def test_after_sign_in_the_way_back_leads_only_to_protected_sites(guard: TestClient) -> None:
    signup(guard, "user@example.test")
    back = "https://app.example.test/chat?id=1"
    for target, expected in (
        (back, back),
        ("https://x.apps.example.test/", "https://x.apps.example.test/"),
        ("https://evil.test/", None),
        ("https://app.example.test@evil.test/", None),
        ("javascript:alert(1)", None),
        ("http://app.example.test/chat", None),  # no way back over plain HTTP from HTTPS
        ("https://app.example.test:8443/", None),  # another service on the host
        ("//evil.test/", None),
    ):
        form = {"email": "user@example.test", "password": PASSWORD, "redirect": target}
        signed = guard.post("/auth/signin", data=form, follow_redirects=False)
        assert signed.status_code == 303
        location = signed.headers["location"]
        guard.cookies.clear()
        if expected is None:
            assert location in ("/account", "/"), (target, location)  # home, never the target
            continue
        assert location.startswith("/auth/continue?to=")  # the form's CSP: no redirect elsewhere
        page = guard.get(location, follow_redirects=False)
        assert page.status_code == 200 and f'content="0;url={expected}"'.replace("&", "&amp;") in page.text


def test_a_parent_domain_cookie_and_no_host_only_one_beside_it(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    client = make_client(
        base_url=WARDGATE,
        FORWARD_AUTH_FILE=write_rules(tmp_path),
        WEBUI_URL=WARDGATE,
        SESSION_COOKIE_DOMAIN="example.test",
    )
    body = {"name": "Ada", "email": "ada@example.test", "password": PASSWORD}
    cookies = client.post("/api/v1/auths/signup", json=body).headers.get_list("set-cookie")
    given = [c for c in cookies if c.startswith("token=") and "Max-Age=0" not in c]
    assert len(given) == 1 and "Domain=example.test" in given[0]
    cleared = [c for c in cookies if c.startswith("token=") and "Max-Age=0" in c]
    assert cleared and all("Domain=" not in c for c in cleared)  # a host-only one from before goes
    out = client.post("/api/v1/auths/signout").headers.get_list("set-cookie")
    assert sum(c.startswith("token=") and "Max-Age=0" in c for c in out) == 2  # both forms ended


def test_a_cookie_domain_must_contain_the_sign_in_host(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_URL": WARDGATE, "SESSION_COOKIE_DOMAIN": "other.test"}
    with pytest.raises(ConfigError, match="SESSION_COOKIE_DOMAIN"):
        load_settings(env)


def test_a_role_that_must_enrol_and_the_app_own_authorization(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    strict = make_client(
        base_url=WARDGATE,
        FORWARD_AUTH_FILE=write_rules(tmp_path),
        WEBUI_URL=WARDGATE,
        MFA_REQUIRED_ROLES="admin",
        DEFAULT_USER_ROLE="user",
    )
    admin = signup(strict, "admin@example.test")["token"]
    refused = ask(strict, "app.example.test", "/", admin)
    assert refused.status_code == 403 and "second factor" in refused.json()["detail"]  # type: ignore[attr-defined]
    user = signup(strict, "user@example.test")["token"]
    headers = {
        "host": "app.example.test",
        "x-forwarded-uri": "/",
        "authorization": "Basic YXBwOnRva2Vu",  # the app's own credential
        "cookie": f"token={user}",
    }
    beside = strict.get(FORWARD, headers=headers)
    assert beside.status_code == 200 and beside.headers["remote-user"] == "user@example.test"


def test_an_original_address_too_long_to_check_is_refused_never_cut(guard: TestClient) -> None:
    """The original URI was cut to 8,192 characters and then decided: a `/../admin` past the cut
    went unseen, while the proxy passed the whole address on (found by review)."""
    user = signup(guard, "user@example.test")["token"]
    pad = "a" * 8200
    for uri, token in ((f"/static/{pad}/../../admin/secret", None), (f"/x/{pad}/../../admin", user)):
        refused = ask(guard, "app.example.test", uri, token)
        assert refused.status_code == 403 and "longer than 8192" in refused.json()["detail"]  # type: ignore[attr-defined]
    long_url = f"https://app.example.test/static/{pad}/../../admin"
    assert nginx(guard, long_url).status_code == 403  # type: ignore[attr-defined]
    assert ask(guard, "app.example.test", f"/static/{'a' * 100}").status_code == 200  # type: ignore[attr-defined]


def test_nginx_fragments_and_path_parameters_are_not_cut_off(guard: TestClient) -> None:
    """nginx passes a raw `#` on, which was cut off before the path was checked: a public path
    (found by review). A key scoped to /api reached /api/..;/admin (Tomcat, Spring: /admin)."""
    assert nginx(guard, "https://app.example.test/static/x#/../../admin").status_code == 403  # type: ignore[attr-defined]
    admin = signup(guard, "admin@example.test")["token"]
    scope = {"name": "s", "upstreams": ["forward-auth"], "paths": ["/api"]}
    key = guard.post("/api/v1/auths/api_keys", json=scope, headers=bearer(admin)).json()["api_key"]
    assert ask(guard, "app.example.test", "/api/x", key).status_code == 200  # type: ignore[attr-defined]
    for sneaky in ("/api/..;/admin/users", "/api;x/../admin", "/api/x;jsessionid=1"):
        assert ask(guard, "app.example.test", sneaky, key).status_code == 403, sneaky  # type: ignore[attr-defined]
