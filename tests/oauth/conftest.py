"""Fixtures for single sign-on: a real OpenID Connect provider (node, panva/oidc-provider), a fake
provider (tests/fakes/idp.py), and a browser-less "browser" that follows redirects between them and an
in-process wardgate."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from tests.fakes.idp import CLIENT_ID, CLIENT_SECRET, FakeIdP, running_idp
from tests.servers import free_port, service_missing
from wardgate.gateway import Gateway
from wardgate.oauth.refusals import refusal_message

PROVIDER_DIR = Path(__file__).parent / "provider"
OIDC_CLIENT_ID = "wardgate"
OIDC_CLIENT_SECRET = "wardgate-test-secret"
APP = "http://testserver"


@contextmanager
def running_oidc_provider(app: str, *, backchannel: bool = False) -> Iterator[str]:
    """Run the real OpenID Connect provider on a free loopback port, knowing `app`'s callbacks and
    post-logout page (and, with `backchannel`, its back-channel logout URI); yield its issuer URL
    and stop it afterwards."""
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        service_missing("the oidc-provider package", "run ./scripts/test, or ./scripts/setup-node")
    node = shutil.which("node")
    assert node, "node is required (Debian package nodejs)"
    callbacks = [f"{app}/oauth/oidc/callback", f"{app}/oauth/oidc/login/callback"]
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(free_port()),
        "REDIRECT_URIS": ",".join(callbacks),
        "POST_LOGOUT_REDIRECT_URIS": f"{app}/auth",
        **({"BACKCHANNEL_LOGOUT_URI": f"{app}/oauth/oidc/backchannel-logout"} if backchannel else {}),
    }
    process = subprocess.Popen(
        [node, "provider.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "ready <issuer>", printed once it listens
        assert line.startswith("ready "), f"the provider did not start: {line!r}"
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()


@pytest.fixture(scope="session")
def oidc_issuer() -> Iterator[str]:
    """The real OpenID Connect provider, for the in-process wardgate at http://testserver."""
    with running_oidc_provider(APP) as issuer:
        yield issuer


@pytest.fixture(scope="session")
def idp_server() -> Iterator[FakeIdP]:
    """The fake provider, shared by the session."""
    with running_idp() as idp:
        yield idp


@pytest.fixture
def idp(idp_server: FakeIdP) -> FakeIdP:
    """The fake provider, reset for this test."""
    idp_server.reset()
    return idp_server


def oidc_env(issuer: str, **overrides: str) -> dict[str, str]:
    """Settings for the generic provider at the real OpenID Connect provider."""
    return {
        "OAUTH_CLIENT_ID": OIDC_CLIENT_ID,
        "OAUTH_CLIENT_SECRET": OIDC_CLIENT_SECRET,
        "OPENID_PROVIDER_URL": f"{issuer}/.well-known/openid-configuration",
        "OAUTH_PROVIDER_NAME": "Test IdP",
        "OAUTH_SCOPES": "openid email profile groups roles",
        **overrides,
    }


def fake_env(idp: FakeIdP, provider: str = "oidc", **overrides: str) -> dict[str, str]:
    """Settings for one preset at the fake provider."""
    env = {
        "oidc": {
            "OAUTH_CLIENT_ID": CLIENT_ID,
            "OAUTH_CLIENT_SECRET": CLIENT_SECRET,
            "OPENID_PROVIDER_URL": f"{idp.base}/oidc/.well-known/openid-configuration",
        },
        "google": {
            "GOOGLE_CLIENT_ID": CLIENT_ID,
            "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
            "GOOGLE_OPENID_PROVIDER_URL": f"{idp.base}/google/.well-known/openid-configuration",
        },
        "microsoft": {
            "MICROSOFT_CLIENT_ID": CLIENT_ID,
            "MICROSOFT_CLIENT_SECRET": CLIENT_SECRET,
            "MICROSOFT_CLIENT_TENANT_ID": "contoso.onmicrosoft.com",
            "MICROSOFT_CLIENT_LOGIN_BASE_URL": f"{idp.base}/ms",
        },
        "github": {
            "GITHUB_CLIENT_ID": CLIENT_ID,
            "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
            "GITHUB_BASE_URL": f"{idp.base}/gh",
            "GITHUB_API_BASE_URL": f"{idp.base}/gh-api",
        },
    }[provider]
    return {**env, **overrides}


def gateway_of(app: TestClient) -> Gateway:
    """The services behind an in-process wardgate (found through the middleware chain)."""
    node: Any = app.app
    while not hasattr(node, "state"):
        node = node.app
    gw: Gateway = node.state.gateway
    return gw


def error_of(response: httpx.Response) -> str | None:
    """The message a refusal shows (`/auth?error=<code>`: the code's fixed message), None when it is
    not one."""
    location = response.headers.get("location", "")
    if response.status_code != 302 or not location.startswith("/auth?"):
        return None
    return refusal_message(unquote(parse_qs(urlsplit(location).query)["error"][0]))


def refusal_code(response: httpx.Response) -> str | None:
    """The refusal code of `/auth?error=<code>`, None when the response is not a refusal (the
    sign-in went through)."""
    location = response.headers.get("location", "")
    if response.status_code != 302 or not location.startswith("/auth?"):
        return None
    return unquote(parse_qs(urlsplit(location).query)["error"][0])


class Browser:
    """Follows redirects like a browser: wardgate in-process, providers over real HTTP; keeps cookies."""

    def __init__(self, app: TestClient | httpx.Client, base: str = APP) -> None:
        self.app = app  # wardgate in-process, or an HTTP client of a wardgate process at `base`
        self.base = base
        self.web = httpx.Client(follow_redirects=False, timeout=10)

    def close(self) -> None:
        """Close the provider-side connection pool."""
        self.web.close()

    def get(self, url: str) -> httpx.Response:
        """GET at wardgate (relative or http://testserver URLs) or at a provider."""
        if url.startswith(self.base) or url.startswith("/"):
            return self.app.get(url.removeprefix(self.base), follow_redirects=False)
        return self.web.get(url)

    def start(self, provider: str = "oidc", redirect: str | None = None) -> str:
        """Click "sign in with ...": the provider's authorization URL."""
        query = f"?redirect={redirect}" if redirect is not None else ""
        response = self.get(f"/oauth/{provider}/login{query}")
        assert response.status_code == 302, response.text
        return response.headers["location"]

    def authorize(self, url: str, login: str = "alice") -> str:
        """Go through the provider (logging in as `login` on oidc-provider's dev pages) back to
        wardgate: the callback URL, not yet visited. Each call is a new person at the provider."""
        self.web.cookies.clear()  # no provider session left over from an earlier sign-in
        response = self.web.get(url)
        for _ in range(20):
            if response.status_code in (302, 303):
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(self.base):
                    return location
                response = self.web.get(location)
                continue
            assert response.status_code == 200, response.text
            base, uid = str(response.url).split("/interaction/")
            form = (
                {"prompt": "login", "login": login, "password": "any"}
                if 'name="login"' in response.text
                else {"prompt": "consent"}
            )
            response = self.web.post(f"{base}/interaction/{uid.split('/')[0]}", data=form)
        raise AssertionError("the provider never redirected back")

    def sign_in(
        self, provider: str = "oidc", login: str = "alice", redirect: str | None = None
    ) -> httpx.Response:
        """The whole flow; wardgate's response to the callback."""
        return self.get(self.authorize(self.start(provider, redirect), login))


@pytest.fixture
def browser_for() -> Iterator[Callable[[TestClient], Browser]]:
    """Make browsers around wardgate clients; closed after the test."""
    browsers: list[Browser] = []

    def make(app: TestClient) -> Browser:
        browser = Browser(app)
        browsers.append(browser)
        return browser

    yield make
    for browser in browsers:
        browser.close()
