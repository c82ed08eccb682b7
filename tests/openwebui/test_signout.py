"""Signing out in Open WebUI's own menu ends the wardgate session too (issue 16): in real Chromium,
in front of the real Open WebUI. Before, Open WebUI's sign-out left wardgate's session alive and its
trusted-header sign-in let the person straight back in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import PASSWORD, SECRET
from tests.e2e.browsing import Console, new_context, shoot
from tests.servers import free_port, wardgate_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def front(open_webui: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """wardgate in front of Open WebUI, as the README deploys it; its base URL (localhost)."""
    port = free_port()
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("wardgate")),
        "WEBUI_SECRET_KEY": SECRET,
        "PORT": str(port),
        "UPSTREAM_URL": open_webui,
        "WARDGATE_PATH_PREFIX": "/wardgate",
    }
    with wardgate_process(env, health="/wardgate/health"):
        yield f"http://localhost:{port}"


def test_signing_out_in_open_webui_ends_the_wardgate_session(front: str, browser: Browser) -> None:
    # Open WebUI's own pages log what they log (its CSP, its model list): only wardgate's are checked.
    context = new_context(browser, Console())
    page = context.new_page()
    page.goto(f"{front}/wardgate/auth")
    page.get_by_label("Name").fill("Ada Lovelace")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create admin account").click()
    page.goto(f"{front}/")
    menu = page.get_by_role("button", name="User menu")
    expect(menu).to_be_visible(timeout=30_000)  # Open WebUI, signed in as Ada by wardgate's headers
    old_cookie = next(c["value"] for c in context.cookies() if c["name"] == "token")
    with contextlib.suppress(PlaywrightTimeoutError):  # Open WebUI's changelog greets a new account
        page.get_by_role("button", name="Okay, Let's Go!").click(timeout=8_000)
    shoot(page, "open-webui-behind-wardgate")
    menu.click()
    page.get_by_text("Sign Out", exact=True).click()
    page.wait_for_url(f"{front}/wardgate/auth**", timeout=15_000)
    expect(page.get_by_text("You are signed out")).to_be_visible()
    shoot(page, "open-webui-signed-out")
    # The old cookie is refused, and Open WebUI does not sign the person in again.
    stale = httpx.get(f"{front}/api/v1/auths/", cookies={"token": old_cookie}, follow_redirects=False)
    assert stale.status_code == 401
    page.goto(f"{front}/")
    page.wait_for_url(f"{front}/wardgate/auth**", timeout=15_000)
    assert "token" not in {c["name"] for c in context.cookies() if c["value"]}
    context.close()
