"""Every start and stop ends in bounded time: a port in use, SIGTERM with a stream in flight, with and
without Redis and PostgreSQL — real processes, stopped by their process id."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PASSWORD, REDIS_URL, SECRET, postgres_database
from tests.servers import fake_upstream_process, free_port, stop

pytestmark = pytest.mark.slow


@pytest.fixture(
    params=["sqlite", pytest.param("postgres+redis", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The embedded default, and PostgreSQL with Redis (where the old hang was)."""
    if request.param == "sqlite":
        yield {}
        return
    assert REDIS_URL
    for url in postgres_database():
        yield {"DATABASE_URL": url, "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": f"wglife{os.getpid()}"}


def _env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.defpath,
        "HOME": os.environ.get("HOME", "/root"),
        "DATA_DIR": str(tmp_path),
        "WEBUI_SECRET_KEY": SECRET,
        "PORT": str(port),
        "SESSION_SYNC_INTERVAL": "0.2",
        "GLOBAL_LOG_LEVEL": "INFO",
        **extra,
    }


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "wardgate", "serve"],
            env=env,
            cwd=env["DATA_DIR"],
            stdout=output,
            stderr=output,
        )


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"not healthy:\n{log.read_text()}")


def test_a_port_in_use_stops_start_up_within_seconds(stores: dict[str, str], tmp_path: Path) -> None:
    """It once logged the bind error, then waited for ever, deaf to SIGTERM (with Redis)."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    log = tmp_path / "serve.log"
    process = _start(_env(tmp_path, port, **stores), log)
    try:
        code = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        stop(process)  # by its pid: SIGTERM, then SIGKILL
        pytest.fail(f"still running 15 s after a failed bind:\n{log.read_text()}")
    finally:
        taken.close()
    output = log.read_text()
    assert code != 0
    assert "address already in use" in output
    assert "Traceback" not in output


@pytest.fixture
def upstream() -> Iterator[str]:
    with fake_upstream_process() as base:
        yield base


def _stream(base: str, token: str, chunks: int, gap: float, out: list[str], first: threading.Event) -> None:
    body = {"model": "m", "stream": True, "chunks": chunks, "gap": gap}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", f"{base}/openai/chat/completions", json=body, headers=headers, timeout=30
    ) as answer:
        try:
            for line in answer.iter_lines():
                if line:
                    out.append(line)
                    first.set()
        except httpx.HTTPError as exc:
            out.append(f"broken: {type(exc).__name__}")


def _serve_with_stream(
    tmp_path: Path, stores: dict[str, str], upstream: str, grace: int, chunks: int, gap: float
) -> tuple[subprocess.Popen[bytes], str, list[str], threading.Thread, threading.Event, Path]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = _env(
        tmp_path,
        port,
        GRACEFUL_SHUTDOWN_TIMEOUT=str(grace),
        OPENAI_API_BASE_URL=f"{upstream}/v1",
        DEFAULT_USER_ROLE="user",
        **stores,
    )
    process = _start(env, log)
    _wait_healthy(base, process, log)
    signup = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    token = httpx.post(f"{base}/api/v1/auths/signup", json=signup, headers={"origin": base}).json()["token"]
    httpx.get(f"{base}/api/v1/auths/", headers={"Authorization": f"Bearer {token}"})  # a "last seen" to flush
    lines: list[str] = []
    first = threading.Event()
    client = threading.Thread(target=_stream, args=(base, token, chunks, gap, lines, first))
    client.start()
    assert first.wait(10), log.read_text()
    return process, base, lines, client, first, log


def test_sigterm_drains_a_stream_in_flight_then_exits(
    stores: dict[str, str], tmp_path: Path, upstream: str
) -> None:
    process, base, lines, client, _first, log = _serve_with_stream(
        tmp_path, stores, upstream, grace=10, chunks=10, gap=0.2
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.HTTPError):  # no longer accepting
        httpx.get(f"{base}/health", timeout=1)
    client.join(15)
    try:
        code = process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"still running after the stream ended:\n{log.read_text()}")
    elapsed = time.monotonic() - started
    assert lines[-1] == "data: [DONE]", lines[-3:]  # the stream in flight was finished, not cut
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert elapsed < 6, elapsed
    assert "Traceback" not in log.read_text()
    _assert_last_seen_written(tmp_path, stores)


def test_a_stream_longer_than_the_grace_period_is_cut_and_the_process_exits(
    stores: dict[str, str], tmp_path: Path, upstream: str
) -> None:
    process, _base, lines, client, _first, log = _serve_with_stream(
        tmp_path, stores, upstream, grace=1, chunks=200, gap=0.1
    )
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stop(process)
        pytest.fail(f"the grace period did not bound the stop:\n{log.read_text()}")
    assert time.monotonic() - started < 5
    client.join(10)
    assert "data: [DONE]" not in lines  # cut short, as it must be, and the client was told
    _assert_last_seen_written(tmp_path, stores)


def _assert_last_seen_written(tmp_path: Path, stores: dict[str, str]) -> None:
    """The batched "last seen" writes were flushed on the way out."""
    url = stores.get("DATABASE_URL") or f"sqlite:///{tmp_path / 'wardgate.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            seen = connection.execute(text("SELECT last_active_at FROM users")).scalars().all()
    finally:
        engine.dispose()
    assert seen and all(value is not None for value in seen), json.dumps(seen)
