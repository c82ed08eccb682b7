"""A service key acting for people, in process: wardgate (TestClient) in front of the fake model
server (tests.fakes.models), which runs in a thread of this process so that what it received can be
read directly, and no process has to start."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, signup
from tests.fakes import models as fake
from tests.servers import free_port

JWT_SECRET = "forwarded-user-secret-" + "0123456789abcdef" * 3
CHAT = [{"role": "user", "content": "say three words"}]  # 3 prompt tokens at the fake


@pytest.fixture(scope="module")
def model_server() -> Iterator[str]:
    """The fake OpenAI + Ollama server, served by uvicorn in a thread; stopped after the module."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the fake model server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(autouse=True)
def _forget_requests() -> Iterator[None]:
    fake.REQUESTS.clear()
    yield
    fake.REQUESTS.clear()


def upstream_saw() -> list[dict[str, Any]]:
    """The requests the model server received (headers lower-cased), oldest first."""
    return list(fake.REQUESTS)


def owui_token(address: str, *, secret: str = JWT_SECRET, **changes: Any) -> str:
    """The token Open WebUI 0.12 mints (`utils/headers.py` `_mint_forward_user_jwt`), with changes
    (a value of None leaves that claim out)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "owui-" + address,  # Open WebUI's own id, not wardgate's
        "email": address,
        "name": address.split("@")[0].title(),
        "role": "user",
        "iss": "open-webui",
        "iat": now,
        "exp": now + 60,
    }
    algorithm = changes.pop("algorithm", "HS256")
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm=algorithm)


@dataclass
class Site:
    """wardgate in front of the fake: an admin (who makes the keys), two people, and a user's own key."""

    client: TestClient
    data_dir: Path
    admin: dict[str, Any]
    people: dict[str, dict[str, Any]]  # email -> the account (id) as the admin added it
    service_key: dict[str, Any]

    def key(self, token: str, **form: Any) -> httpx.Response:
        return self.client.post("/api/v1/auths/api_keys", json={"name": "k", **form}, headers=bearer(token))

    def chat(self, key: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        """POST /openai/chat/completions with `key` and extra headers."""
        payload = {"model": "gpt-4o-mini", "messages": CHAT, "max_tokens": 4, **body}
        return self.client.post(
            "/openai/chat/completions", json=payload, headers={**bearer(key), **(headers or {})}
        )

    def as_person(self, email: str, **token_changes: Any) -> dict[str, str]:
        return {"X-OpenWebUI-User-Jwt": owui_token(email, **token_changes), "X-OpenWebUI-Chat-Id": "chat-1"}

    def update(self, who: str, **changes: Any) -> None:
        user_id = self.people[who]["id"]
        answer = self.client.post(
            f"/api/v1/users/{user_id}/update", json=changes, headers=bearer(self.admin["token"])
        )
        assert answer.status_code == 200, answer.text

    def records(self) -> list[dict[str, Any]]:
        """Every usage record, once the batched writes have run (they run every 0.2 s here)."""
        time.sleep(0.5)
        with sqlite3.connect(self.data_dir / "wardgate.db") as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT user_id, api_key_id, chat_id, model, prompt_tokens, completion_tokens, status"
                " FROM usage_records ORDER BY id"
            ).fetchall()
        return [dict(row) for row in rows]


def make_site(make_client: Callable[..., TestClient], tmp_path: Path, model_server: str, **env: str) -> Site:
    """An instance with API keys on, the fake behind /openai and /ollama, and its people."""
    client = make_client(
        ENABLE_API_KEYS="true",
        USER_PERMISSIONS_FEATURES_API_KEYS="true",
        OPENAI_API_BASE_URL=f"{model_server}/v1",
        OLLAMA_BASE_URL=model_server,
        UPSTREAM_URL=model_server,
        **env,
    )
    admin = signup(client, "admin@example.com", name="Ada")
    people = {}
    for email, role in (
        ("bob@example.com", "user"),
        ("carol@example.com", "user"),
        ("pat@example.com", "pending"),
    ):
        form = {"name": email.split("@")[0].title(), "email": email, "password": PASSWORD, "role": role}
        answer = client.post("/api/v1/auths/add", json=form, headers=bearer(admin["token"]))
        assert answer.status_code == 200, answer.text
        people[email] = answer.json()
    made = client.post(
        "/api/v1/auths/api_keys",
        json={"name": "open-webui", "acts_for_users": True},
        headers=bearer(admin["token"]),
    )
    assert made.status_code == 200, made.text
    return Site(client, tmp_path, admin, people, made.json())
