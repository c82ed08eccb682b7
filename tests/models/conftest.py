"""Fixtures of the model tests: the fake model server and wardgate in front of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.models.deployment import Deployment, fake_models_process, running_deployment


@pytest.fixture(scope="session")
def models_server() -> Iterator[str]:
    """The fake OpenAI + Ollama server (tests.fakes.models) as its own process."""
    with fake_models_process() as base:
        yield base


@pytest.fixture(scope="module")
def deployment(models_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """wardgate in front of it, with model rules, an admin and a user."""
    with running_deployment(models_server, tmp_path_factory.mktemp("models")) as found:
        yield found
