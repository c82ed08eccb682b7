"""A real fake upstream process and a real wardgate process in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.fakes.upstream import UPSTREAM_KEY
from tests.servers import fake_upstream_process, wardgate_process

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The fake OpenAI/Ollama/app server as its own process."""
    with fake_upstream_process() as base:
        yield base


# The fake answers any path with what it received: the tests here check the relay's mechanics on
# such paths, which the model rules treat as managing the server (tests/models covers those rules).
OPEN_MANAGEMENT = '[management]\nroles = ["user", "admin"]\n'


def gateway_env(tmp_path: Path, upstream: str, **extra: str) -> dict[str, str]:
    """wardgate in front of the fake: /ollama, /openai (key injected) and the app."""
    access = tmp_path / "models.toml"
    access.write_text(OPEN_MANAGEMENT)
    return {
        "DATA_DIR": str(tmp_path),
        "MODEL_ACCESS_FILE": str(access),
        "WEBUI_SECRET_KEY": SECRET,
        "SESSION_SYNC_INTERVAL": "0.2",
        "OLLAMA_BASE_URL": upstream,
        "OPENAI_API_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "UPSTREAM_URL": upstream,
        "DEFAULT_USER_ROLE": "user",
        "FORWARDED_ALLOW_IPS": "10.255.255.1",
        **extra,
    }  # the test client is an untrusted peer


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with wardgate_process(gateway_env(tmp_path_factory.mktemp("proxy"), upstream)) as base:
        yield base


def account(base: str, email: str, *, name: str = "Someone") -> dict[str, Any]:
    """Sign up (or in) over TCP and return the session JSON."""
    body = {"name": name, "email": email, "password": PASSWORD}
    response = httpx.post(f"{base}/api/v1/auths/signup", json=body, headers={"origin": base})
    if response.status_code == 400:
        response = httpx.post(f"{base}/api/v1/auths/signin", json=body, headers={"origin": base})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
