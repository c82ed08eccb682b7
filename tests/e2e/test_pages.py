"""The pages in a real browser (Debian's Chromium driven by Playwright), under wardgate's strict CSP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import SECRET
from tests.e2e.browsing import Console, new_context, shoot, sign_in
from tests.servers import wardgate_process

PASSWORD = "correct-horse-battery"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One wardgate with a fresh database: the tests below run in order, like a first day of use."""
    data = tmp_path_factory.mktemp("pages")
    env = {
        "DATA_DIR": str(data),
        "WEBUI_SECRET_KEY": SECRET,
        "DEFAULT_USER_ROLE": "pending",
        "SESSION_SYNC_INTERVAL": "0.2",
    }
    with wardgate_process(env) as base:
        yield base


def test_first_run_creates_the_admin(server: str, browser: Browser, console: Console) -> None:
    context = new_context(browser, console)
    page = context.new_page()
    page.goto(server)
    expect(page).to_have_url(f"{server}/auth")
    expect(page.get_by_role("heading", name="Create the admin account")).to_be_visible()
    shoot(page, "first-run-light")
    page.get_by_label("Name").fill("Ada Admin")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create admin account").click()
    expect(page).to_have_url(f"{server}/account")
    expect(page.get_by_text("ada@example.com")).to_be_visible()
    expect(page.locator(".badge.role-admin")).to_have_text("admin")
    page.get_by_role("button", name="Sign out").first.click()
    expect(page).to_have_url(f"{server}/auth?notice=signed-out")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    context.close()


def test_wrong_password_shows_a_clear_message(server: str, browser: Browser, console: Console) -> None:
    console.allow_refusals = True  # the refused sign-in is a 400 page
    context = new_context(browser, console)
    page = context.new_page()
    page.goto(f"{server}/auth")
    shoot(page, "signin-light")
    sign_in(page, server, "ada@example.com", "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("The email or password provided is incorrect")
    expect(page.get_by_label("Email")).to_have_value("ada@example.com")
    shoot(page, "signin-error-light")
    sign_in(page, server, "ada@example.com")
    expect(page).to_have_url(f"{server}/account")
    context.close()


def test_revoking_another_session_sends_it_back_to_sign_in(
    server: str, browser: Browser, console: Console
) -> None:
    first, second = new_context(browser, console), new_context(browser, console)
    page_one, page_two = first.new_page(), second.new_page()
    sign_in(page_one, server, "ada@example.com")
    sign_in(page_two, server, "ada@example.com")
    expect(page_two).to_have_url(f"{server}/account")
    page_one.reload()
    other = page_one.locator("tbody tr:not(.current)").first
    other.get_by_role("button", name="Sign out").click()
    expect(page_one.get_by_role("status")).to_have_text("That session is signed out.")
    shoot(page_one, "account-light")
    page_two.get_by_role("link", name="Admin").click()
    expect(page_two).to_have_url(f"{server}/auth?redirect=/admin&notice=session-ended")
    expect(page_two.get_by_role("heading", name="Sign in to wardgate")).to_be_visible()
    expect(page_two.get_by_role("status")).to_contain_text("Your session has ended")
    first.close()
    second.close()


def test_admin_approves_and_changes_roles(server: str, browser: Browser, console: Console) -> None:
    context = new_context(browser, console)
    page = context.new_page()
    page.goto(f"{server}/auth?mode=signup")
    page.get_by_label("Name").fill("Bob Pending")
    page.get_by_label("Email").fill("bob@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Your account is waiting for approval")).to_be_visible()
    shoot(page, "pending-light")
    context.close()

    admin = new_context(browser, console)
    page = admin.new_page()
    sign_in(page, server, "ada@example.com")
    page.get_by_role("link", name="Admin").click()
    page.get_by_role("button", name="Approve bob@example.com").click()
    expect(page.get_by_role("status")).to_have_text("bob@example.com is approved: they can use the site now.")
    page.get_by_label("Role of bob@example.com", exact=True).select_option("admin")
    page.get_by_role("button", name="Save role of bob@example.com").click()
    expect(page.get_by_label("Role of bob@example.com", exact=True)).to_have_value("admin")
    expect(page.get_by_role("status")).to_have_text("Saved: bob@example.com is now admin.")
    expect(page.locator("#events")).to_contain_text("Role changed")
    shoot(page, "admin-light")
    admin.close()


def _background_luminance(page: Page) -> float:
    """The relative luminance (0 black .. 1 white) of the page's background, as rendered."""
    color = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


def test_pages_follow_the_systems_dark_theme(server: str, browser: Browser, console: Console) -> None:
    light = new_context(browser, console).new_page()
    light.goto(f"{server}/auth")
    assert _background_luminance(light) > 0.8
    light.context.close()
    context = new_context(browser, console, scheme="dark")
    page = context.new_page()
    page.goto(f"{server}/auth")
    assert _background_luminance(page) < 0.2
    shoot(page, "signin-dark")
    sign_in(page, server, "ada@example.com")
    expect(page).to_have_url(f"{server}/account")
    assert _background_luminance(page) < 0.2
    shoot(page, "account-dark")
    page.goto(f"{server}/admin")
    expect(page.get_by_role("heading", name="Administration")).to_be_visible()
    assert _background_luminance(page) < 0.2
    shoot(page, "admin-dark")
    context.close()


def test_a_csp_violation_would_be_caught(server: str, browser: Browser) -> None:
    """The console check above can fail: content the policy refuses shows up in the collector."""
    watcher = Console()
    context = new_context(browser, watcher)
    page = context.new_page()
    page.goto(f"{server}/auth")
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend', '<img src=\"https://elsewhere.example/x.png\">')"
    )
    page.wait_for_timeout(200)
    context.close()
    assert any("Content Security Policy" in m or "Refused to" in m for m in watcher.problems()), (
        watcher.messages
    )
