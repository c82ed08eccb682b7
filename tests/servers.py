"""Real processes for tests: `wardgate serve` on a free port (waited for, always stopped), and what a
test does when a service it needs is not there; and an ASGI app served in a thread of the test's own
process, when the test must look inside the server."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn

import httpx
import pytest
import uvicorn

REQUIRE_SERVICES = os.environ.get("WARDGATE_TEST_REQUIRE_SERVICES") == "1"
SERVICES_HOW = 'run ./scripts/test, or eval "$(scripts/services start)" for PostgreSQL and Redis on loopback'


def service_missing(what: str, how: str) -> NoReturn:
    """Skip a test that needs `what`, saying `how` to get it; under ./scripts/test (CI) fail instead.

    A plain `pytest` on a laptop then runs everything it can; `./scripts/test` sets
    WARDGATE_TEST_REQUIRE_SERVICES=1, so a service it failed to start is a failure, never a skip.
    """
    message = f"needs {what}: {how}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def wardgate_process(
    env: Mapping[str, str],
    *args: str,
    scheme: str = "http",
    verify: ssl.SSLContext | bool = False,
    timeout: float = 30.0,
    pids: list[int] | None = None,
    health: str = "/health",
) -> Iterator[str]:
    """Run `wardgate serve` with `env` (merged over a minimal environment); yield its base URL (and
    append its process id to `pids`, for a test that reads /proc)."""
    port = int(env["PORT"]) if "PORT" in env else free_port()
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/root"),
        "PORT": str(port),
        **env,
    }
    cwd = Path(env.get("DATA_DIR", "."))
    # The log goes to a file, not a pipe: a pipe nobody reads fills after 64 KiB of log lines and
    # then blocks the server mid-request.
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "wardgate", "serve", *args],
            env=full_env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if pids is not None:
            pids.append(process.pid)
        base = f"{scheme}://localhost:{port}" if scheme == "https" else f"{scheme}://127.0.0.1:{port}"
        try:
            _wait_healthy(process, output, base + health, verify, timeout)
            yield base
        finally:
            stop(process)


def _wait_healthy(
    process: subprocess.Popen[str],
    output: IO[str],
    url: str,
    verify: ssl.SSLContext | bool,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output.seek(0)
            raise RuntimeError(f"wardgate exited with {process.returncode}:\n{output.read()}")
        try:
            if httpx.get(url, verify=verify, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"wardgate did not become healthy at {url}")


@contextmanager
def fake_process(module: str, ready_path: str) -> Iterator[str]:
    """A fake server (`python -m <module> PORT`) as its own process: its base URL once `ready_path`
    answers; refused (RuntimeError) if it exits or is not up within 20 s; always stopped."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(port)],
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,  # a pipe nobody reads would block it once full
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}{ready_path}", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start") from None
                time.sleep(0.05)
        yield base
    finally:
        stop(process)


def fake_upstream_process() -> AbstractContextManager[str]:
    """The fake OpenAI/Ollama/app server of the proxy tests (tests.fakes.upstream)."""
    return fake_process("tests.fakes.upstream", "/state")


def stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    if process.stdout:
        process.stdout.close()


@contextmanager
def served_in_thread(app: Any, http: type[Any], log_level: str = "error") -> Iterator[int]:
    """`app` on uvicorn with uvloop and the protocol class `http` (wardgate's, say), in a thread of
    this process, on a free loopback port: the port. Stopped when the block ends."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=http, loop="uvloop", log_level=log_level)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
