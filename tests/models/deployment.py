"""A real fake model server (tests.fakes.models) and a real wardgate in front of it, with model rules
(also used by tests/e2e: `fake_models_process` and `running_deployment`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import PASSWORD, SECRET
from tests.servers import fake_process, wardgate_process

ROOT = Path(__file__).parents[2]
UPSTREAM_KEY = "sk-upstream-secret-0123456789"
ACCESS = """
[models.roles]
user = ["llama3*", "gpt-4o-mini", "text-embedding-3-small", "silent-model", "whisper-1", "mistral:7b"]

[models.groups]

[budgets.roles]

[management]
roles = ["admin"]
"""


def fake_models_process() -> AbstractContextManager[str]:
    """The fake OpenAI + Ollama server (tests.fakes.models) as its own process."""
    return fake_process("tests.fakes.models", "/api/version")


@dataclass
class Deployment:
    """wardgate in front of the fake: its URL, its database, an admin and a user (tokens)."""

    base: str
    upstream: str
    database: Path
    admin: dict[str, Any]
    user: dict[str, Any]

    def records(self, expected: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The usage records, once at least `expected` are written (they are written in bulk)."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.database) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute("SELECT * FROM usage_records ORDER BY id")]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def upstream_requests(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.upstream}/__requests").json()
        return found

    def clear_upstream(self) -> None:
        httpx.delete(f"{self.upstream}/__requests")


def sign_up(base: str, email: str) -> dict[str, Any]:
    body = {"name": email.split("@")[0].title(), "email": email, "password": PASSWORD}
    response = httpx.post(f"{base}/api/v1/auths/signup", json=body, headers={"origin": base})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


@contextmanager
def running_deployment(models_server: str, data: Path) -> Iterator[Deployment]:
    """wardgate serving `models_server` with the rules of ACCESS, its database in `data`."""
    access = data / "models.toml"
    access.write_text(ACCESS)
    env = {
        "DATA_DIR": str(data),
        "WEBUI_SECRET_KEY": SECRET,
        "SESSION_SYNC_INTERVAL": "0.2",
        "DEFAULT_USER_ROLE": "user",
        "SIGNUP_RATE_LIMIT": "1000/1h",
        "ENABLE_API_KEYS": "true",
        "USER_PERMISSIONS_FEATURES_API_KEYS": "true",
        "OLLAMA_BASE_URL": models_server,
        "OPENAI_API_BASE_URL": f"{models_server}/v1",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "MODEL_ACCESS_FILE": str(access),
        "MODEL_REQUEST_MAX_BYTES": str(256 * 1024),
    }
    with wardgate_process(env) as base:
        admin = sign_up(base, "admin@example.com")
        user = sign_up(base, "ada@example.com")
        yield Deployment(base, models_server, data / "wardgate.db", admin, user)
