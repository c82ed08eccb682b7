"""Single sign-on in a real browser: the button on /auth, the provider's pages, back signed in, and
sign-out that ends the provider session too — against the local OpenID Connect provider."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import SECRET
from tests.e2e.test_pages import shoot, sign_in
from tests.oauth.conftest import oidc_env, running_oidc_provider
from tests.servers import free_port, wardgate_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """wardgate, with an admin already, and an OpenID provider that knows wardgate's callback."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_oidc_provider(base) as issuer:
        settings = {
            "DATA_DIR": str(tmp_path_factory.mktemp("sso")),
            "WEBUI_SECRET_KEY": SECRET,
            "PORT": str(port),
            **oidc_env(issuer, OAUTH_PROVIDER_NAME="Example SSO", OAUTH_SCOPES="openid email profile"),
            "ENABLE_OAUTH_SIGNUP": "true",
            "DEFAULT_USER_ROLE": "user",
        }
        with wardgate_process(settings) as url:
            assert url == base
            admin = {"name": "Ada", "email": "ada@example.com", "password": "correct-horse-battery"}
            assert httpx.post(f"{base}/api/v1/auths/signup", json=admin).status_code == 200
            yield base


def test_sso_button_round_trip(site: str, browser: Browser, tmp_path: Path) -> None:
    context = browser.new_context()
    page = context.new_page()
    ours: list[str] = []
    page.on("console", lambda m: ours.append(m.text) if page.url.startswith(site) else None)
    page.goto(f"{site}/auth")
    shoot(page, "signin-sso-light")
    page.get_by_role("link", name="Example SSO").click()
    page.locator("input[name=login]").fill("alice")
    page.locator("input[name=password]").fill("any")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]").click()  # the provider's consent step
    expect(page).to_have_url(f"{site}/account")
    expect(page.get_by_text("alice@example.test", exact=True)).to_be_visible()
    expect(page.get_by_text("Example SSO — alice@example.test")).to_be_visible()  # the linked identity
    page.get_by_role("button", name="Sign out").first.click()
    # wardgate's session is over; the provider's end-session page asks, then returns to /auth.
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(f"{site}/auth")
    page.goto(f"{site}/account")
    expect(page).to_have_url(f"{site}/auth?redirect=/account")
    assert [m for m in ours if "Content Security Policy" in m or "Refused to" in m] == []
    context.close()


def test_link_a_provider_from_the_account_page(site: str, browser: Browser) -> None:
    """A password account links the provider from inside: a same-origin POST, a page that continues
    to the provider (CSP form-action allows no redirect off-site), back with a fresh SSO session."""
    account = {"name": "Dave", "email": "dave@example.test", "password": "correct-horse-battery"}
    assert httpx.post(f"{site}/api/v1/auths/signup", json=account).status_code == 200
    context = browser.new_context()
    page = context.new_page()
    ours: list[str] = []
    page.on("console", lambda m: ours.append(m.text) if page.url.startswith(site) else None)
    sign_in(page, site, account["email"], account["password"])
    expect(page).to_have_url(f"{site}/account")
    page.once("dialog", lambda dialog: dialog.accept())  # "every other session and API key will end"
    page.locator("input[id^=link-password-]").fill(account["password"])  # presence: the password
    page.get_by_role("button", name="Link Example SSO").click()
    page.locator("input[name=login]").fill("dave")
    page.locator("input[name=password]").fill("any")
    page.locator("button[type=submit]").click()
    page.locator("button[type=submit]").click()  # the provider's consent step
    expect(page).to_have_url(f"{site}/account?notice=linked-signed-out")
    expect(page.get_by_text("Example SSO — dave@example.test")).to_be_visible()
    expect(page.get_by_role("button", name="Link Example SSO")).to_have_count(0)
    shoot(page, "account-linked-light")
    assert [m for m in ours if "Content Security Policy" in m or "Refused to" in m] == []
    context.close()
