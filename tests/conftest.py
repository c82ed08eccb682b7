"""Shared fixtures: settings for a throwaway instance, an in-process app client, real databases."""

from __future__ import annotations

import io
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from tests.scaleout.harness import PrivateRedis
from tests.servers import SERVICES_HOW, service_missing
from wardgate import cli
from wardgate.app import create_app
from wardgate.config import Settings, load_settings

SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct-horse-battery"
ORIGIN = "http://testserver"

# Fixtures that start a process of their own: a test using one is `slow`, outside the fast loop.
PROCESS_FIXTURES = frozenset({"private_redis", "oidc_issuer"})

POSTGRES_URL = os.environ.get("WARDGATE_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("WARDGATE_TEST_REDIS_URL")


def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the server ./scripts/test started; dropped afterwards."""
    if not POSTGRES_URL:
        service_missing("PostgreSQL (WARDGATE_TEST_POSTGRES_URL)", SERVICES_HOW)
    name = f"wg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: SQLite in tmp_path, and a real PostgreSQL one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wardgate.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a throwaway instance (SQLite in tmp_path)."""
    return {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "SESSION_SYNC_INTERVAL": "0.2"}


@pytest.fixture
def make_settings(base_env: dict[str, str]) -> Callable[..., Settings]:
    """Settings from base_env plus overrides (keyword = variable name)."""

    def make(**overrides: str) -> Settings:
        return load_settings({**base_env, **overrides})

    return make


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start an in-process wardgate (lifespan included) with overrides; stopped after the test."""
    clients: list[TestClient] = []

    def make(*, base_url: str = ORIGIN, **overrides: str) -> TestClient:
        client = TestClient(
            create_app(make_settings(**overrides)), base_url=base_url, headers={"origin": base_url}
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A default instance."""
    return make_client()


def signup(
    client: TestClient, email: str, *, name: str = "Someone", password: str = PASSWORD
) -> dict[str, Any]:
    """Sign up through the API and return the JSON body (asserting success)."""
    response = client.post("/api/v1/auths/signup", json={"name": name, "email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    client.cookies.clear()  # tests pass tokens explicitly unless they test the cookie
    return body


def bearer(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def signin(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """Sign in through the API and return the JSON body (asserting success); the cookie jar is left empty."""
    response = client.post("/api/v1/auths/signin", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    client.cookies.clear()
    return body


def refused(response: Response, status: int) -> str:
    """Assert a refusal: exactly this status and a body of exactly `{"detail": "<text>"}`; return the text."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"detail"}, body
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip(), body
    return detail


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of this test's own (the shared one must never be stopped)."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Outcome:
    """What a CLI command returned and printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run `wardgate <args>` in this process (a real process costs a second of imports per command)."""

    def run(env: dict[str, str], *args: str, stdin: str = "") -> Outcome:
        def settings(_environment: Mapping[str, str], **kw: Any) -> Settings:
            return load_settings(env, **kw)  # `env` instead of the process environment

        monkeypatch.setattr(cli, "load_settings", settings)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return Outcome(code, out, err)

    return run


@pytest.fixture(autouse=True)
def _needed_services(request: pytest.FixtureRequest) -> None:
    """A test marked `postgres` or `redis` skips (fails under ./scripts/test) without that service."""
    if request.node.get_closest_marker("postgres") and not POSTGRES_URL:
        service_missing("PostgreSQL (WARDGATE_TEST_POSTGRES_URL)", SERVICES_HOW)
    if request.node.get_closest_marker("redis") and not REDIS_URL:
        service_missing("Redis (WARDGATE_TEST_REDIS_URL)", SERVICES_HOW)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start a process through a fixture `slow`, so `-m "not slow"` leaves them out."""
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
