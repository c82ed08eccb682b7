"""The pages as people use them (issue 20), in Chromium: axe-core finds nothing on any page or state
in light and dark, keyboard-only walks of the main tasks, a 390 px and a 320 px phone with no
sideways scroll and every action on screen, a session that ends mid-form, forgot password by email."""

from __future__ import annotations

import mailbox
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import SECRET
from tests.e2e.browsing import (
    PASSWORD,
    Console,
    axe_violations,
    new_context,
    shoot,
    sideways_overflow,
    sign_in,
)
from tests.servers import free_port, stop, wardgate_process

pytestmark = pytest.mark.slow
PHONES = {"390": {"width": 390, "height": 844}, "320": {"width": 320, "height": 640}}
MAILBOX = "aiosmtpd.handlers.Mailbox"
LONG_EMAIL = "maximilian.alexander.longname-with-a-very-long-address@subdivision.example-company.com"


@pytest.fixture(scope="module")
def maildir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A real SMTP server process on loopback that keeps what it receives in a Maildir."""
    directory = tmp_path_factory.mktemp("mail") / "box"
    mailbox.Maildir(directory, create=True)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", MAILBOX, str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port, directory
    finally:
        stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, maildir: tuple[int, Path]) -> Iterator[str]:
    """One wardgate with sign-up awaiting approval and password reset by email (plain SMTP to this
    machine; the STARTTLS path is tested in tests/mail)."""
    data = tmp_path_factory.mktemp("in-use")
    port = free_port()
    env = {
        "DATA_DIR": str(data),
        "PORT": str(port),
        "WEBUI_SECRET_KEY": SECRET,
        "WEBUI_URL": f"http://127.0.0.1:{port}",
        "DEFAULT_USER_ROLE": "pending",
        "SESSION_SYNC_INTERVAL": "0.2",
        "SMTP_HOST": "localhost",
        "SMTP_PORT": str(maildir[0]),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "wardgate@example.com",
    }
    with wardgate_process(env) as base:
        yield base


def _sign_up(page: Page, base: str, name: str, email: str) -> None:
    page.goto(f"{base}/auth?mode=signup")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("^Create")).click()


def _clean(page: Page, state: str) -> None:
    problems = axe_violations(page)
    assert problems == [], f"{state}: {problems}"


def test_first_day_every_page_and_state_passes_axe_in_light_and_dark(
    server: str, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True  # the refusals below are 4xx pages on purpose
    for scheme in ("light", "dark"):
        page = new_context(browser, console, scheme).new_page()
        page.goto(f"{server}/auth")
        _clean(page, f"{scheme} first run")
        if scheme == "light":
            page.get_by_label("Name").fill("Ada Admin")
            page.get_by_label("Email").fill("ada@example.com")
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_label("Password again").fill(PASSWORD)
            page.get_by_role("button", name="Create admin account").click()
            expect(page).to_have_url(f"{server}/account")
            page.get_by_role("button", name="Sign out").first.click()
        page.goto(f"{server}/auth")
        _clean(page, f"{scheme} sign-in")
        sign_in(page, server, "ada@example.com", "wrong-password")
        expect(page.get_by_role("alert")).to_be_visible()
        _clean(page, f"{scheme} refused sign-in")
        page.goto(f"{server}/auth?mode=signup")
        expect(page).to_have_title(re.compile("^Create an account"))
        expect(page.get_by_text("need an administrator's approval")).to_be_visible()
        _clean(page, f"{scheme} sign-up")
        page.goto(f"{server}/auth/forgot")
        _clean(page, f"{scheme} forgot password")
        page.goto(f"{server}/auth/reset?token=not-a-token")
        _clean(page, f"{scheme} reset link that does not work")
        page.goto(f"{server}/account/no-such-page")
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        _clean(page, f"{scheme} not found")
        sign_in(page, server, "ada@example.com")
        expect(page).to_have_url(f"{server}/account")
        _clean(page, f"{scheme} account")
        page.get_by_label("Current password").fill("not-it")
        page.get_by_label("New password", exact=True).fill("another-passphrase")
        page.get_by_label("New password again").fill("another-passphrase")
        page.get_by_role("button", name="Change password").click()
        current = page.get_by_label("Current password")
        expect(current).to_have_attribute("aria-invalid", "true")
        expect(current).to_be_focused()
        expect(page.get_by_label("New password", exact=True)).to_have_value("another-passphrase")
        _clean(page, f"{scheme} wrong current password")
        page.goto(f"{server}/admin")
        _clean(page, f"{scheme} admin")
        page.context.close()


def test_a_pending_person_is_told_the_next_step_and_the_admin_approves_by_keyboard(
    server: str, browser: Browser, console: Console
) -> None:
    person = new_context(browser, console).new_page()
    _sign_up(person, server, "Maximilian Alexander Longname", LONG_EMAIL)
    expect(person).to_have_url(f"{server}/account")
    expect(person.get_by_role("heading", name="Your account is waiting for approval")).to_be_visible()
    expect(person.get_by_text("sign in again later")).to_be_visible()
    _clean(person, "pending account")
    shoot(person, "pending-light")
    person.context.close()

    page = new_context(browser, console).new_page()
    page.goto(f"{server}/auth")  # keyboard only from here: the email field has focus
    page.keyboard.type("ada@example.com")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{server}/account")
    page.goto(f"{server}/admin")
    approve = page.get_by_role("button", name=f"Approve {LONG_EMAIL}")
    for _ in range(60):  # Tab to it, as a keyboard user would
        page.keyboard.press("Tab")
        if approve.evaluate("b => b === document.activeElement"):
            break
    else:
        pytest.fail("Approve is not reachable with Tab")
    page.keyboard.press("Enter")
    feedback = page.locator(".feedback")
    expect(feedback).to_have_text(f"{LONG_EMAIL} is approved: they can use the site now.")
    expect(feedback).to_be_focused()
    expect(feedback).to_have_attribute("role", "status")
    row = page.locator("tr", has_text=LONG_EMAIL)
    revoke = row.get_by_role("button", name="Revoke sessions")  # the name holds the visible words
    expect(revoke).to_be_visible()
    revoke.focus()
    page.keyboard.press("Enter")
    feedback = row.locator(".feedback")
    expect(feedback).to_have_text(f"Every session of {LONG_EMAIL} has ended: they need to sign in again.")
    expect(feedback).to_be_focused()
    _clean(page, "admin after a change")
    shoot(page, "admin-light")
    page.context.close()


@pytest.mark.parametrize("phone", ["390", "320"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_on_a_phone_nothing_scrolls_sideways_and_every_action_is_on_screen(
    server: str, browser: Browser, console: Console, phone: str, scheme: str
) -> None:
    context = browser.new_context(color_scheme=scheme, viewport=PHONES[phone], is_mobile=True, has_touch=True)
    context.on("page", lambda p: (setattr(console, "pages", console.pages + 1), p.on("console", console)))
    page = context.new_page()
    page.goto(f"{server}/auth")
    assert sideways_overflow(page) <= 0
    sign_in(page, server, "ada@example.com")
    expect(page).to_have_url(f"{server}/account")
    assert sideways_overflow(page) <= 0, "account"
    for button in page.locator("main button:visible").all():
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONES[phone]["width"], button
    page.goto(f"{server}/admin")
    assert sideways_overflow(page) <= 0, "admin"
    row = page.locator("tr", has_text=LONG_EMAIL)
    for name in ("Save", "Disable", "Revoke sessions", "Delete"):
        button = row.get_by_role("button", name=name)
        button.scroll_into_view_if_needed()
        expect(button).to_be_in_viewport()
        box = button.bounding_box()
        assert box and box["x"] + box["width"] <= PHONES[phone]["width"], name
    _clean(page, f"admin at {phone} px, {scheme}")
    if phone == "390":
        shoot(page, f"admin-phone-{scheme}")
        page.goto(f"{server}/account")
        shoot(page, f"account-phone-{scheme}")
    context.close()


def test_a_session_that_ends_mid_form_comes_back_to_the_form_after_signing_in(
    server: str, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True
    first, second = new_context(browser, console), new_context(browser, console)
    page, other = first.new_page(), second.new_page()
    sign_in(page, server, "ada@example.com")
    page.goto(f"{server}/account")
    sign_in(other, server, "ada@example.com")
    other.goto(f"{server}/account")
    other.on("dialog", lambda dialog: dialog.accept())  # "Sign out every session, this one included?"
    other.get_by_role("button", name="Sign out everywhere").click()
    expect(other.get_by_role("status")).to_contain_text("signed out everywhere")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill("never-sent-passphrase")
    page.get_by_label("New password again").fill("never-sent-passphrase")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status")).to_contain_text("Your session has ended")
    sign_in_here = page.get_by_role("button", name="Sign in", exact=True)
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    sign_in_here.click()
    expect(page).to_have_url(f"{server}/account#password")
    expect(page.get_by_role("heading", name="Change password")).to_be_visible()
    assert "detail" not in page.content()
    page.goto(f"{server}/auth/signin")  # a form's address opened as a page: a page, not JSON
    expect(page.get_by_role("heading", name="This address is for a form")).to_be_visible()
    first.close()
    second.close()


def test_forgot_password_by_email_and_back_in(
    server: str, browser: Browser, console: Console, maildir: tuple[int, Path]
) -> None:
    page = new_context(browser, console).new_page()
    page.goto(f"{server}/auth")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_contain_text("Check your email")
    box = mailbox.Maildir(maildir[1], create=False)
    deadline = time.monotonic() + 10
    while not len(box) and time.monotonic() < deadline:
        time.sleep(0.05)
    (message,) = list(box)
    body = message.get_payload(decode=True).decode()
    link = re.search(r"(http://\S+/auth/reset\?token=\S+)", body)
    assert link, body
    page.goto(link.group(1))
    _clean(page, "choose a new password")
    page.get_by_label("New password", exact=True).fill("a-new-passphrase-here")
    page.get_by_label("New password again").fill("a-new-passphrase-here")
    page.get_by_label("Show password").check()
    expect(page.get_by_label("New password", exact=True)).to_have_attribute("type", "text")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.get_by_role("status")).to_contain_text("Your new password is set")
    sign_in(page, server, "ada@example.com", "a-new-passphrase-here")
    expect(page).to_have_url(f"{server}/account")
    page.context.close()
