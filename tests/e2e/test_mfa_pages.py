"""Second factors on the pages, in Chromium under the strict CSP: an authenticator app enrolled and
used through the pages (codes computed here with pyotp), passkeys with a CDP virtual authenticator
(email-free sign-in, second factor, no sign-in from a browser without the credential), "Confirm it
is you" before sensitive changes, and a role that must enrol being sent to enrolment.

Passkeys need a host name as relying party ID: the server's WEBUI_URL and the browser both use
`http://localhost:<port>` (an IP address is never a valid RP ID; Chromium refuses it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Locator, Page, expect

from tests.conftest import PASSWORD, SECRET
from tests.e2e.browsing import ARTIFACTS, Console, new_context, shoot
from tests.servers import free_port, wardgate_process

pytestmark = pytest.mark.slow
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@contextmanager
def _wardgate(tmp_path_factory: pytest.TempPathFactory, **extra: str) -> Iterator[str]:
    """wardgate with passkeys on (WEBUI_URL names localhost); yields the address the browser uses."""
    port = free_port()
    base = f"http://localhost:{port}"
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("mfa")),
        "WEBUI_SECRET_KEY": SECRET,
        "PORT": str(port),
        "WEBUI_URL": base,
        "DEFAULT_USER_ROLE": "user",
        "SESSION_SYNC_INTERVAL": "0.2",
        **extra,
    }
    with wardgate_process(env):
        body = {"name": "Ada Admin", "email": "ada@example.com", "password": PASSWORD}
        response = httpx.post(f"{base}/api/v1/auths/signup", json=body, headers={"origin": base})
        assert response.status_code == 200, response.text
        yield base


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One wardgate for the enrolment tests; each test signs up a person of its own."""
    with _wardgate(tmp_path_factory) as base:
        yield base


class AuthenticatorApp:
    """The person's app: a code for a time step later than the last one used, as the server only
    accepts each step once and never an earlier one (it allows one step of skew either way)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last = 0

    def code(self) -> str:
        current = int(time.time()) // 30
        step = max(self.last + 1, current)
        if step > current + 1:  # the next step is not accepted yet: wait until it is
            time.sleep((step - 1) * 30 - time.time() + 0.5)
        self.last = step
        return self.totp.at(step * 30)

    def wrong_code(self) -> str:
        current = int(time.time()) // 30
        valid = {self.totp.at(s * 30) for s in range(current - 1, current + 3)}
        return next(c for c in (f"{d}" * 6 for d in range(10)) if c not in valid)


def _sign_up(page: Page, base: str, name: str, email: str) -> None:
    page.goto(f"{base}/auth?mode=signup")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(f"{base}/account")  # no app upstream: the account page is home


def sign_in(page: Page, base: str, email: str) -> None:
    """The password form (`browsing.sign_in` would also match "Sign in with a passkey")."""
    page.goto(f"{base}/auth")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()


def _sign_out(page: Page, base: str) -> None:
    page.get_by_role("button", name="Sign out").first.click()
    expect(page).to_have_url(f"{base}/auth?notice=signed-out")


def _enrol_app(page: Page, base: str) -> tuple[AuthenticatorApp, list[str]]:
    """Set up the authenticator app on /account; its app and the recovery codes shown once."""
    page.goto(f"{base}/account#mfa")
    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.get_by_role("heading", name="Set up your authenticator app")).to_be_visible()
    expect(page.locator("#totp-setup svg")).to_be_visible()
    app = AuthenticatorApp(page.locator("#totp-secret").inner_text().replace(" ", ""))
    _shoot_part(page.locator("#totp-setup"), "mfa-totp-setup")
    page.get_by_label("Code from your authenticator app").fill(app.code())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    codes = page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) == 10 and all(len(c) == 11 for c in codes), codes
    shoot(page, "mfa-recovery-codes")
    page.get_by_role("link", name="I have saved them").click()
    expect(page.locator("#mfa")).to_contain_text("Sign-ins ask for the code your app shows")
    expect(page.locator("#mfa")).to_contain_text("10 of 10 left")
    return app, codes


def _shoot_part(part: Locator, name: str) -> None:
    """A screenshot of one part of a page (smaller than the whole page, for docs/)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    part.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def _virtual_authenticator(context: BrowserContext, page: Page) -> tuple[CDPSession, str]:
    """A passkey device for the tab (it survives navigations): the CDP session and its id."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return cdp, str(added["authenticatorId"])


def test_an_authenticator_app_is_enrolled_and_asked_for_at_sign_in(
    server: str, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True  # the wrong code is answered 400
    page = new_context(browser, console).new_page()
    _sign_up(page, server, "Tina Totp", "tina@example.com")
    app, codes = _enrol_app(page, server)
    _sign_out(page, server)

    sign_in(page, server, "tina@example.com")
    expect(page.get_by_role("heading", name="One more step")).to_be_visible()
    expect(page.get_by_role("button", name="Use a passkey")).to_have_count(0)  # she has none
    code = page.get_by_label("Code from your authenticator app")
    expect(code).to_have_attribute("autocomplete", "one-time-code")
    expect(code).to_have_attribute("inputmode", "numeric")
    shoot(page, "mfa-code-step")
    code.fill(app.wrong_code())
    page.get_by_role("button", name="Continue").first.click()
    expect(page.get_by_role("alert")).to_contain_text("The code is not valid")
    expect(code).to_have_attribute("aria-describedby", "mfa-help form-error")
    code.fill(app.code())  # the same pending sign-in goes on
    page.get_by_role("button", name="Continue").first.click()
    expect(page).to_have_url(f"{server}/account")
    expect(page.get_by_text("tina@example.com")).to_be_visible()
    _sign_out(page, server)

    sign_in(page, server, "tina@example.com")  # a recovery code instead, on a phone
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_text("Use a recovery code instead").click()
    page.get_by_label("Recovery code").fill(codes[0].upper())
    shoot(page, "mfa-code-step-phone")
    page.get_by_role("button", name="Continue").last.click()
    expect(page).to_have_url(f"{server}/account")
    page.goto(f"{server}/account#mfa")
    expect(page.locator("#mfa")).to_contain_text("9 of 10 left")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than a phone
    page.context.close()


def test_a_sensitive_change_asks_to_confirm_it_is_you(
    server: str, browser: Browser, console: Console
) -> None:
    """A session from before the factor was added has not shown it: changing the password asks
    for it first, then the change goes through."""
    console.allow_refusals = True  # the refused change is answered 403
    earlier = new_context(browser, console).new_page()
    _sign_up(earlier, server, "Sam Stepup", "sam@example.com")
    enrolling = new_context(browser, console).new_page()
    sign_in(enrolling, server, "sam@example.com")
    app, _codes = _enrol_app(enrolling, server)

    earlier.goto(f"{server}/account")
    earlier.get_by_label("Current password").fill(PASSWORD)
    earlier.get_by_label("New password", exact=True).fill(PASSWORD + "-2")
    earlier.get_by_label("New password again").fill(PASSWORD + "-2")
    earlier.get_by_role("button", name="Change password").click()
    expect(earlier.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    expect(earlier.get_by_role("alert")).to_contain_text("Confirm it is you")
    shoot(earlier, "mfa-step-up")
    earlier.locator("#step-up").get_by_label("Code from your authenticator app").fill(app.code())
    earlier.locator("#step-up").get_by_role("button", name="Confirm").first.click()
    expect(earlier.get_by_role("status")).to_have_text("Confirmed. You can make the change now.")
    earlier.get_by_label("Current password").fill(PASSWORD)
    earlier.get_by_label("New password", exact=True).fill(PASSWORD + "-2")
    earlier.get_by_label("New password again").fill(PASSWORD + "-2")
    earlier.get_by_role("button", name="Change password").click()
    expect(earlier).to_have_url(f"{server}/auth?notice=password")
    earlier.context.close()
    enrolling.context.close()


def test_a_passkey_signs_in_without_an_email_and_as_a_second_factor(
    server: str, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True  # the removal before "Confirm it is you" is answered 403
    context = new_context(browser, console)
    page = context.new_page()
    cdp, device = _virtual_authenticator(context, page)
    _sign_up(page, server, "Pia Passkey", "pia@example.com")
    earlier_context = new_context(browser, console)  # a session from before the passkey
    earlier = earlier_context.new_page()
    sign_in(earlier, server, "pia@example.com")
    page.goto(f"{server}/account#mfa")
    page.get_by_label("Name of the new passkey").fill("Test laptop")
    page.get_by_role("button", name="Add a passkey").click()
    codes = page.locator("#passkey-codes")
    expect(codes.get_by_role("heading", name="Save your recovery codes")).to_be_visible()
    expect(codes.locator("li")).to_have_count(10)
    codes.get_by_role("link", name="I have saved them").click()
    expect(page.locator("#mfa")).to_contain_text("Test laptop")
    shoot(page, "mfa-passkey-added")
    _sign_out(page, server)

    passkey = page.get_by_role("button", name="Sign in with a passkey")
    expect(passkey).to_be_visible()
    shoot(page, "mfa-passkey-button")
    passkey.click()  # no email typed: the passkey says whose it is
    expect(page).to_have_url(f"{server}/account")
    expect(page.get_by_text("pia@example.com")).to_be_visible()
    _sign_out(page, server)

    sign_in(page, server, "pia@example.com")  # the password, then the passkey as second factor
    expect(page.get_by_role("heading", name="One more step")).to_be_visible()
    expect(page.get_by_label("Code from your authenticator app")).to_have_count(0)  # no app
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(f"{server}/account")
    page.goto(f"{server}/account#mfa")
    expect(page.locator("#mfa")).to_contain_text("last used")  # in the reader's time zone
    expect(page.locator("#mfa")).not_to_contain_text("last used never")
    held = cdp.send("WebAuthn.getCredentials", {"authenticatorId": device})["credentials"]
    assert len(held) == 1 and held[0]["isResidentCredential"] and held[0]["signCount"] >= 2
    context.close()

    # The earlier session removes the passkey: "Confirm it is you" first, with the passkey (copied
    # to that browser's own device, as a synced passkey would be).
    other, other_device = _virtual_authenticator(earlier_context, earlier)
    other.send("WebAuthn.addCredential", {"authenticatorId": other_device, "credential": held[0]})
    earlier.on("dialog", lambda dialog: dialog.accept())  # data-confirm's window.confirm
    earlier.reload()  # it shows /account from before the passkey
    earlier.get_by_role("button", name="Remove the passkey Test laptop").click()
    expect(earlier.get_by_role("heading", name="Confirm it is you")).to_be_visible()
    expect(earlier.get_by_role("textbox", name="Recovery code")).to_be_visible()  # no app: codes
    earlier.get_by_role("button", name="Confirm with a passkey").click()
    expect(earlier).to_have_url(f"{server}/account?notice=stepped-up#mfa")
    earlier.get_by_role("button", name="Remove the passkey Test laptop").click()
    expect(earlier.get_by_role("status")).to_have_text("The passkey is removed.")
    expect(earlier.locator("#mfa")).to_contain_text("You get ten when you set up your first")
    earlier_context.close()


def test_a_browser_without_the_passkey_cannot_sign_in_with_it(
    server: str, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True
    context = new_context(browser, console)
    page = context.new_page()
    _virtual_authenticator(context, page)  # a device of its own, without pia's passkey
    page.goto(f"{server}/auth")
    page.get_by_role("button", name="Sign in with a passkey").click()
    expect(page.get_by_role("alert")).to_contain_text("No passkey was used")
    page.goto(f"{server}/account")
    expect(page).to_have_url(f"{server}/auth?redirect=/account")
    context.close()


def test_a_role_that_requires_a_second_factor_is_sent_to_enrol(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser, console: Console
) -> None:
    console.allow_refusals = True  # the admin change before "Confirm it is you" is answered 403
    with _wardgate(tmp_path_factory, MFA_REQUIRED_ROLES="admin") as base:
        other = new_context(browser, console).new_page()
        sign_in(other, base, "ada@example.com")  # a session from before the enrolment
        page = new_context(browser, console).new_page()
        sign_in(page, base, "ada@example.com")
        page.goto(f"{base}/admin")
        expect(page).to_have_url(f"{base}/account?notice=mfa-required#mfa")
        expect(page.get_by_role("status")).to_contain_text("Your role requires a second factor")
        expect(page.get_by_role("heading", name="Change password")).to_have_count(0)
        shoot(page, "mfa-required")
        app, _codes = _enrol_app(page, base)
        page.goto(f"{base}/admin")
        expect(page.get_by_role("heading", name="Administration")).to_be_visible()
        ada = page.locator("#users tr", has_text="ada@example.com")
        expect(ada.locator(".factor-kinds")).to_have_text("app")
        shoot(page, "mfa-admin")

        other.goto(f"{base}/admin#users")  # admin changes need a recent second factor
        _sign_up(new_context(browser, console).new_page(), base, "Una User", "una@example.com")
        other.reload()
        other.get_by_role("button", name="Disable una@example.com").click()
        expect(other.get_by_role("heading", name="Confirm it is you")).to_be_visible()
        other.locator("#step-up").get_by_label("Code from your authenticator app").fill(app.code())
        other.locator("#step-up").get_by_role("button", name="Confirm").first.click()
        expect(other.get_by_role("status")).to_have_text("Confirmed. You can make the change now.")
        other.get_by_role("button", name="Disable una@example.com").click()
        expect(other.get_by_role("status")).to_contain_text("una@example.com is disabled")
        expect(other.locator("#users tr", has_text="una@example.com")).to_contain_text("disabled")
        for context in browser.contexts:
            context.close()
