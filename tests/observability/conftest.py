"""Fixtures of the metrics and trace tests: an in-process wardgate that may be scraped, and what a
scrape says."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.conftest import ORIGIN
from tests.models.deployment import fake_models_process
from tests.servers import fake_upstream_process
from wardgate.app import create_app
from wardgate.config import Settings

METRICS_TOKEN = "metrics-token-for-the-tests-0123456789abcdef"
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def make_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """An in-process wardgate (lifespan included) whose peer is `client`, with METRICS_TOKEN unless
    overridden; stopped after the test."""
    clients: list[TestClient] = []

    def make(*, client: str = "testclient", **overrides: str) -> TestClient:
        settings = make_settings(**{"METRICS_TOKEN": METRICS_TOKEN, **overrides})
        test_client = TestClient(
            create_app(settings), base_url=ORIGIN, headers={"origin": ORIGIN}, client=(client, 50000)
        )
        test_client.__enter__()
        clients.append(test_client)
        return test_client

    yield make
    for test_client in clients:
        test_client.__exit__(None, None, None)


def scrape(client: TestClient) -> str:
    """GET /metrics with the token (asserting success)."""
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.text
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` with exactly these labels in an exposition (0 if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def grew(before: str, after: str, name: str, **labels: str) -> float:
    """How much the sample `name` with these labels grew between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def label_values(text: str) -> set[str]:
    """Every label value in an exposition."""
    return {
        str(v)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        for v in s.labels.values()
    }


@pytest.fixture(scope="module")
def models_server() -> Iterator[str]:
    """The fake OpenAI + Ollama server (tests.fakes.models) as its own process."""
    with fake_models_process() as base:
        yield base


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The fake app server of the proxy tests (tests.fakes.upstream): it echoes headers."""
    with fake_upstream_process() as base:
        yield base
