"""The real Open WebUI (0.12.4, installed by scripts/setup-openwebui into .openwebui/venv), on loopback
with its trusted-header sign-in, as wardgate's README deploys it. Started once for the session (about
15 s) and stopped by its process id."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import browser  # noqa: F401 - Chromium, as the browser tests have it
from tests.servers import free_port, service_missing, stop

BINARY = Path(__file__).parents[2] / ".openwebui" / "venv" / "bin" / "open-webui"


@pytest.fixture(scope="session")
def open_webui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Open WebUI's base URL."""
    if not BINARY.exists():
        service_missing("Open WebUI", "run ./scripts/setup-openwebui (./scripts/test does)")
    data = tmp_path_factory.mktemp("open-webui")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(data),
        "DATA_DIR": str(data),
        "WEBUI_SECRET_KEY": "open-webui-test-secret-0123456789abcdef",
        "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": "X-Forwarded-Email",
        "WEBUI_AUTH_TRUSTED_NAME_HEADER": "X-Forwarded-Name",
        # No network but loopback: nothing to download, check or report.
        "OFFLINE_MODE": "true",
        "HF_HUB_OFFLINE": "1",
        "ENABLE_OLLAMA_API": "false",
        "ENABLE_OPENAI_API": "false",
        "ENABLE_VERSION_UPDATE_CHECK": "false",
        "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "false",
    }
    with (data / "open-webui.log").open("wb") as log:
        process = subprocess.Popen(
            [str(BINARY), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=data,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"Open WebUI did not start: {(data / 'open-webui.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base
    finally:
        stop(process)
