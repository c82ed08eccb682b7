"""Usage on the pages, in Chromium under the strict CSP: a person's usage and budget on /account,
everyone's as SVG charts on /admin, and the CSV export (formula cells neutralised)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from playwright.sync_api import Browser, expect

from tests.conftest import PASSWORD, bearer
from tests.e2e.test_pages import Console, new_context, shoot, sign_in
from tests.models.deployment import Deployment, fake_models_process, running_deployment, sign_up

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "say three words"}]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """wardgate in front of the fake model server, with usage of two people and a budget."""
    with (
        fake_models_process() as upstream,
        running_deployment(upstream, tmp_path_factory.mktemp("usage")) as d,
    ):
        formula = sign_up(d.base, "=cmd@example.com")  # a name a spreadsheet would run
        budget = {"token_budget": {"tokens": 1000, "period": "1d"}}
        update = f"{d.base}/api/v1/users/{d.user['id']}/update"
        assert httpx.post(update, json=budget, headers=bearer(d.admin["token"])).status_code == 200
        for person, models in ((d.user, ["gpt-4o-mini", "llama3:latest"]), (formula, ["gpt-4o-mini"])):
            with OpenAI(base_url=f"{d.base}/openai", api_key=person["token"], max_retries=0) as client:
                for model in models:
                    client.chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
        d.records(3)
        yield d


def test_a_person_sees_their_usage_and_budget(
    deployment: Deployment, browser: Browser, console: Console
) -> None:
    page = new_context(browser, console).new_page()
    sign_in(page, deployment.base, "ada@example.com", password=PASSWORD)
    page.goto(f"{deployment.base}/account#usage")
    usage = page.locator("#usage")
    expect(usage).to_contain_text("16 of 1,000 tokens used today")
    expect(usage.locator("tbody tr")).to_have_count(2)
    expect(usage).to_contain_text("gpt-4o-mini")
    shoot(page, "usage-account")


def test_admins_see_everyones_usage_as_charts(
    deployment: Deployment, browser: Browser, console: Console
) -> None:
    page = new_context(browser, console).new_page()
    sign_in(page, deployment.base, "admin@example.com", password=PASSWORD)
    page.goto(f"{deployment.base}/admin#usage")
    charts = page.locator("#usage svg[role=img]")
    expect(charts).to_have_count(3)
    expect(page.locator("#usage-people-title")).to_have_text("Tokens by person")
    expect(page.locator("#usage")).to_contain_text("3 calls, 24 tokens")
    assert page.locator("#usage .chart-bar").count() >= 30 + 2 + 2  # 30 days, 2 people, 2 models
    shoot(page, "usage-admin")


def test_the_csv_export_is_for_admins_and_safe_to_open(deployment: Deployment) -> None:
    admin = httpx.get(f"{deployment.base}/admin/usage.csv", cookies={"token": deployment.admin["token"]})
    assert admin.status_code == 200 and admin.headers["content-type"].startswith("text/csv")
    assert admin.headers["content-disposition"].startswith("attachment;")
    lines = list(csv.reader(io.StringIO(admin.text)))
    assert lines[0][:3] == ["date", "user", "model"]
    people = {row[1] for row in lines[1:]}
    assert people == {"ada@example.com", "'=cmd@example.com"}  # never a live formula
    assert sum(int(row[4]) + int(row[5]) for row in lines[1:]) == 24
    user = httpx.get(f"{deployment.base}/admin/usage.csv", cookies={"token": deployment.user["token"]})
    assert user.status_code == 403 and "ada@" not in user.text
