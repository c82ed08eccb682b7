"""A real fake upstream process and a real wardgate process in front of it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.fakes.upstream import UPSTREAM_KEY
from tests.servers import free_port, stop, wardgate_process

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    """The fake OpenAI/Ollama/app server as its own process."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would block it once full
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/state", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        stop(process)


def gateway_env(tmp_path: Path, upstream: str, **extra: str) -> dict[str, str]:
    """wardgate in front of the fake: /ollama, /openai (key injected) and the app."""
    return {
        "DATA_DIR": str(tmp_path),
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
