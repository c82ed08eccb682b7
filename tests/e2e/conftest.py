"""Shared fixtures of the end-to-end tests: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.browsing import Console
from tests.servers import service_missing

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-domain-reliability",
]


def chromium_path() -> str:
    """Debian's Chromium (installed by ./scripts/test); never a downloaded browser."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    service_missing("Chromium", "run ./scripts/test, or apt-get install chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def console() -> Iterator[Console]:
    """A fresh console per test, checked after it: no errors, no CSP violations on any of its pages."""
    collected = Console()
    yield collected
    assert collected.pages > 0, "the console listener saw no page"
    assert collected.problems() == []
