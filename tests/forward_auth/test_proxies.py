"""Forward auth behind real nginx (`auth_request`) and real Caddy (`forward_auth`), on loopback:
sign-in redirects, identity headers the client cannot forge, revocation within a second, WebSockets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect

from tests.conftest import PASSWORD, SECRET
from tests.forward_auth import proxies
from tests.servers import fake_upstream_process, free_port, wardgate_process

pytestmark = pytest.mark.slow
HTML = {"accept": "text/html"}
FORGED = {"Remote-User": "mallory@evil.test", "Remote-Role": "admin", "remote-email": "m@evil.test"}
RULES = """
[[sites]]
host = "127.0.0.1"
public = ["/state"]

[[sites.paths]]
prefix = "/admin"
roles = ["admin"]

[[sites]]
host = "other.example.test"
public = ["/"]
"""


@dataclass(frozen=True)
class Stack:
    wardgate: str
    nginx: str
    caddy: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run = tmp_path_factory.mktemp("forward-auth")
    rules = run / "rules.toml"
    rules.write_text(RULES)
    port = free_port()
    env = {
        "DATA_DIR": str(run),
        "WEBUI_SECRET_KEY": SECRET,
        "PORT": str(port),
        "WEBUI_URL": f"http://127.0.0.1:{port}",
        "FORWARD_AUTH_FILE": str(rules),
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        "DEFAULT_USER_ROLE": "user",
    }
    with (
        fake_upstream_process() as app,
        wardgate_process(env) as wardgate,
        proxies.nginx(run / "nginx", wardgate, app) as nginx,
        proxies.caddy(run / "caddy", wardgate, app) as caddy,
    ):
        yield Stack(wardgate, nginx, caddy)


def _session(stack: Stack, email: str) -> str:
    """A new account's session token (the first is the admin)."""
    created = httpx.post(
        f"{stack.wardgate}/api/v1/auths/signup",
        json={"name": "Someone", "email": email, "password": PASSWORD},
        headers={"origin": stack.wardgate},
    )
    assert created.status_code == 200, created.text
    token: str = created.json()["token"]
    return token


def _identity(response: httpx.Response) -> dict[str, list[str]]:
    """The Remote-* headers the app received (every value of each, by lower-case name)."""
    seen: dict[str, list[str]] = {}
    for name, value in response.json():
        if name.lower().startswith("remote"):
            seen.setdefault(name.lower(), []).append(value)
    return seen


@pytest.fixture(scope="module")
def admin(stack: Stack) -> str:
    return _session(stack, "admin@example.test")


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_a_browser_without_a_session_is_sent_to_sign_in(stack: Stack, proxy: str) -> None:
    base = getattr(stack, proxy)
    answer = httpx.get(f"{base}/echo-headers?x=1&y=2", headers=HTML)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(f"{stack.wardgate}/auth?redirect=")
    assert parse_qs(urlsplit(location).query)["redirect"] == [f"{base}/echo-headers?x=1&y=2"]
    forged = httpx.get(f"{base}/echo-headers", headers={**FORGED, "accept": "application/json"})
    assert forged.status_code in (302, 401)  # never the app, whatever it claims


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_the_app_gets_wardgate_identity_and_none_the_client_forged(
    stack: Stack, admin: str, proxy: str
) -> None:
    base = getattr(stack, proxy)
    answer = httpx.get(f"{base}/echo-headers", headers=FORGED, cookies={"token": admin})
    assert answer.status_code == 200, answer.text
    identity = _identity(answer)
    assert identity["remote-user"] == ["admin@example.test"]
    assert identity["remote-email"] == ["admin@example.test"]
    assert identity["remote-role"] == ["admin"]
    assert "mallory" not in str(identity) and "evil" not in str(identity)


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_the_app_never_gets_the_session_cookie(stack: Stack, admin: str, proxy: str) -> None:
    base = getattr(stack, proxy)
    answer = httpx.get(f"{base}/echo-headers", cookies={"app": "1", "token": admin, "z": "2"})
    assert answer.status_code == 200
    cookies = [value for name, value in answer.json() if name.lower() == "cookie"]
    assert cookies and admin not in cookies[0] and "app=1" in cookies[0] and "z=2" in cookies[0]
    assert "token=" not in cookies[0] or "token=;" in cookies[0]  # gone (nginx) or emptied (Caddy)


def test_a_host_the_client_names_does_not_choose_the_rules(stack: Stack) -> None:
    """nginx asks about its own URL (X-Original-URL with a fixed host): a `Host` naming another,
    public site changes nothing."""
    forged = httpx.get(f"{stack.nginx}/admin/x", headers={"Host": "other.example.test"})
    assert forged.status_code in (302, 401)


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_rules_and_public_paths(stack: Stack, admin: str, proxy: str) -> None:
    base = getattr(stack, proxy)
    user = _session(stack, f"user-{proxy}@example.test")
    assert httpx.get(f"{base}/admin/x", cookies={"token": user}).status_code == 403
    assert httpx.get(f"{base}/admin/x", cookies={"token": admin}).status_code == 200
    public = httpx.get(f"{base}/state", headers=FORGED)  # no session needed
    assert public.status_code == 200
    for sneaky in ("/state/..;/admin/x", "/state/%2e%2e/admin/x", "/ADMIN/x", "/admin;x=1"):
        assert httpx.get(f"{base}{sneaky}").status_code in (302, 400, 401), sneaky  # never the app
        assert httpx.get(f"{base}{sneaky}", cookies={"token": user}).status_code in (400, 403), sneaky


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_a_revoked_session_is_refused_within_a_second(stack: Stack, proxy: str) -> None:
    base = getattr(stack, proxy)
    token = _session(stack, f"leaving-{proxy}@example.test")
    assert httpx.get(f"{base}/echo-headers", cookies={"token": token}).status_code == 200
    signed_out = httpx.post(
        f"{stack.wardgate}/api/v1/auths/signout", headers={"authorization": f"Bearer {token}"}
    )
    assert signed_out.status_code == 200
    started = time.monotonic()
    refused = httpx.get(f"{base}/echo-headers", cookies={"token": token})
    assert refused.status_code in (302, 401) and time.monotonic() - started < 1.0


@pytest.mark.parametrize("proxy", ["nginx", "caddy"])
def test_a_websocket_passes_for_a_session_only(stack: Stack, admin: str, proxy: str) -> None:
    ws = getattr(stack, proxy).replace("http://", "ws://") + "/ws/echo"
    with connect(ws, additional_headers={"Cookie": f"token={admin}"}, open_timeout=5) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5).endswith(":hello")
    with pytest.raises(WebSocketException):  # refused, or sent to sign in: never the app
        connect(ws, open_timeout=5)


def test_the_headers_traefik_sends(stack: Stack, admin: str) -> None:
    """Traefik's forwardAuth: a GET to the address with the original request in X-Forwarded-Method,
    -Proto, -Host, -Uri and -For, the client's own headers beside them (Traefik 3 documentation);
    Traefik passes a non-2xx answer, its Location included, to the client as it is."""
    traefik = {
        "X-Forwarded-Method": "POST",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "127.0.0.1:8443",
        "X-Forwarded-Uri": "/chat/new?draft=1",
        "X-Forwarded-For": "203.0.113.9",
        "Accept": "text/html,application/xhtml+xml",
    }
    address = f"{stack.wardgate}/api/v1/authz/forward-auth"
    refused = httpx.get(address, headers=traefik)
    assert refused.status_code == 401  # a POST is not a page to come back to
    browser = httpx.get(address, headers={**traefik, "X-Forwarded-Method": "GET"})
    assert browser.status_code == 302
    back = parse_qs(urlsplit(browser.headers["location"]).query)["redirect"]
    assert back == ["https://127.0.0.1:8443/chat/new?draft=1"]
    allowed = httpx.get(address, headers={**traefik, **FORGED}, cookies={"token": admin})
    assert allowed.status_code == 200
    assert allowed.headers["remote-user"] == "admin@example.test"
    assert allowed.headers["remote-role"] == "admin"
