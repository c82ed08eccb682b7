"""Real processes for the scale-out tests: a private Redis to stop and start, and `wardgate serve` instances.

The shared Redis of `./scripts/services` is used by every engineer's tests, so fault tests never touch
it: they start their own `redis-server` on a free loopback port (no persistence) and stop, pause or
restart that one. Every wait is bounded, and every process is killed by its own id in teardown.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from tests.servers import free_port

STARTUP_SECONDS = 30.0


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.02, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, or fail after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


class PrivateRedis:
    """A `redis-server` of our own on a fixed free port, which tests may stop, restart or pause."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (./scripts/setup-system installs it)")
        self._binary = binary
        self._workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    def start(self) -> None:
        """Start (or restart) the server on the same port and wait until it answers PING."""
        if self._process is not None and self._process.poll() is None:
            return
        command = [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self._workdir), "--protected-mode", "yes"]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, timeout=10, interval=0.02, what=f"redis-server on port {self.port}")

    def answers(self) -> bool:
        """True when the server answers PING."""
        client = redis.Redis.from_url(self.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """A redis-py client for inspecting keys (the caller closes it)."""
        return redis.Redis.from_url(self.url, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), leaving the port closed."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._paused:
            process.send_signal(signal.SIGCONT)
            self._paused = False
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections are accepted by the kernel but never answered."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Undo `pause`."""
        if self._process is not None and self._paused:
            self._process.send_signal(signal.SIGCONT)
            self._paused = False


@dataclass
class Instance:
    """One `wardgate serve` process on its own port and DATA_DIR; output goes to a log file."""

    name: str
    env: dict[str, str]
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Where the process writes its output."""
        return self.data_dir / "wardgate.log"

    def launch(self) -> None:
        """Start the process without waiting for it (see `wait_healthy`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "DATA_DIR": str(self.data_dir), "PORT": str(self.port), "HOST": "127.0.0.1"}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wardgate", "serve"],
            env=env,
            cwd=self.data_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, deadline: float) -> None:
        """Poll /health until 200; fail with the log if the process exits or `deadline` passes."""
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"instance {self.name} exited:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"instance {self.name} not healthy in time:\n{self.log_tail()}")

    def ready(self) -> dict[str, Any]:
        """The body of /health?ready=true."""
        body: dict[str, Any] = httpx.get(f"{self.url}/health?ready=true", timeout=5).json()
        return body

    def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL after 10 s; close the log."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process output."""
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_together(instances: list[Instance], *, timeout: float = STARTUP_SECONDS) -> None:
    """Launch every instance at the same moment, then wait for all of them to be healthy."""
    for instance in instances:
        instance.launch()
    deadline = time.monotonic() + timeout
    for instance in instances:
        instance.wait_healthy(deadline)
