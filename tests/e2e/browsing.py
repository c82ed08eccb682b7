"""What the browser tests share: a console that collects errors (CSP violations among them), a
context that watches every page, screenshots and signing in."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

from tests.servers import service_missing

PASSWORD = "correct-horse-battery"
ARTIFACTS = Path(
    os.environ.get("WARDGATE_SCREENSHOT_DIR", Path(__file__).parents[1] / ".artifacts" / "screenshots")
)


class Console:
    """The console errors and warnings of every page of one test, CSP violations among them."""

    DELIBERATE = "Failed to load resource: the server responded with a status of 4"

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.pages = 0
        self.allow_refusals = False
        """A test that is answered a 4xx on purpose (a refused sign-in) sets this: Chromium logs it."""

    def __call__(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.messages.append(message.text)

    def problems(self) -> list[str]:
        """Every message that is not a deliberate refusal."""
        allowed = self.DELIBERATE if self.allow_refusals else None
        return [m for m in self.messages if allowed is None or not m.startswith(allowed)]


def new_context(browser: Browser, console: Console, scheme: str = "light") -> BrowserContext:
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1200, "height": 800})

    def watch(page: Page) -> None:
        console.pages += 1
        page.on("console", console)

    context.on("page", watch)
    return context


def shoot(page: Page, name: str) -> None:
    """Write a screenshot of the page in the current colour scheme."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/auth")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()


AXE = Path(__file__).parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# WCAG 2.2 A and AA, and axe's best practices (landmarks, headings, region...).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is now, one line each (rule, impact, first targets).

    Injected through the DevTools protocol (`evaluate`), which the page's CSP does not govern: the
    pages stay under their real policy while they are checked."""
    if not AXE.is_file():
        service_missing("axe-core", "run ./scripts/test, or ./scripts/setup-node")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text() + "\n;undefined")
    found: list[dict[str, object]] = page.evaluate(
        """async (tags) => {
            const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
            return result.violations.map((v) => ({id: v.id, impact: v.impact,
                targets: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
                summary: v.nodes.length ? v.nodes[0].failureSummary : ""}));
        }""",
        AXE_TAGS,
    )
    return [f"{v['id']} ({v['impact']}): {v['targets']} {v['summary']}" for v in found]


def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scroll)."""
    width: int = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    return width
