"""`wardgate` as a real process: serve over TCP, restarts, start-up refusals, and the CLI beside a server."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Outcome
from tests.servers import free_port
from wardgate.storage import schema

pytestmark = pytest.mark.slow

SECRET = "process-test-secret-key-0123456789-abcdefghijklmnop"
PASSWORD = "correct-horse-battery"
WARDGATE = (sys.executable, "-m", "wardgate")
START_TIMEOUT = 20.0
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status reports it.
CLEAN_EXIT = (0, -signal.SIGTERM)
CHANGE_TIMEOUT = 5.0  # a CLI change reaches a running server within SESSION_SYNC_INTERVAL (0.2 s) polls


def environment(data_dir: Path, **values: str) -> dict[str, str]:
    """A minimal environment (nothing inherited from the test runner) for a wardgate process."""
    return {
        "PATH": os.defpath,
        "DATA_DIR": str(data_dir),
        "SESSION_SYNC_INTERVAL": "0.2",
        "GLOBAL_LOG_LEVEL": "WARNING",
        **values,
    }


def wardgate(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one `wardgate` command to completion (in DATA_DIR, so no stray .env is read)."""
    return subprocess.run(
        [*WARDGATE, *args],
        env=env,
        cwd=env["DATA_DIR"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class Server:
    """One `wardgate serve` child process, its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [*WARDGATE, "serve"],
                env={**env, "PORT": str(port)},
                cwd=env["DATA_DIR"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        """Return once /health answers; fail with the server's output if it exits or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"wardgate serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"wardgate serve was not healthy within {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within 10 s; return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log.read_text(errors="replace")

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """A POST without a cookie jar (each call a fresh client, like a script)."""
        return httpx.post(f"{self.url}{path}", timeout=10, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """A GET without a cookie jar."""
        return httpx.get(f"{self.url}{path}", timeout=10, **kwargs)

    def signup(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        """Create an account; return the session body."""
        response = self.post(
            "/api/v1/auths/signup", json={"name": "Someone", "email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def signin(self, email: str, password: str = PASSWORD) -> str:
        """Sign in; return the token."""
        response = self.post("/api/v1/auths/signin", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token

    def me(self, token: str) -> httpx.Response:
        """GET /api/v1/auths/ with this token."""
        return self.get("/api/v1/auths/", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Server]]:
    """Start healthy `wardgate serve` processes; every one is stopped at teardown, whatever happened."""
    servers: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        server = Server(env, tmp_path / f"serve-{len(servers)}.log")
        servers.append(server)
        server.wait_healthy()
        return server

    yield start
    for server in servers:
        server.stop()


def eventually(probe: Callable[[], bool], timeout: float = CHANGE_TIMEOUT) -> bool:
    """Poll until `probe()` is true or the timeout passes; return its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.05)
    return probe()


def refused_401(response: httpx.Response) -> bool:
    """A 401 with a `{"detail": text}` body."""
    return response.status_code == 401 and set(response.json()) == {"detail"}


# --- serving ---------------------------------------------------------------------------------------


def test_serve_over_tcp_and_revocation_survives_a_restart(
    tmp_path: Path, serve: Callable[[dict[str, str]], Server]
) -> None:
    env = environment(tmp_path, WEBUI_SECRET_KEY=SECRET)
    first = serve(env)
    assert first.signup("admin@example.com")["role"] == "admin"
    ended, kept = first.signin("admin@example.com"), first.signin("admin@example.com")
    assert first.me(ended).status_code == 200
    signout = first.post("/api/v1/auths/signout", headers={"Authorization": f"Bearer {ended}"})
    assert signout.status_code == 200 and signout.json()["status"] is True
    assert refused_401(first.me(ended))
    assert first.me(kept).status_code == 200
    assert first.stop() in CLEAN_EXIT

    second = serve(env)
    assert refused_401(second.me(ended))  # still refused by a process that never saw the sign-out
    assert second.me(kept).json()["email"] == "admin@example.com"
    assert second.me(second.signin("admin@example.com")).status_code == 200


def test_a_generated_secret_key_is_kept_and_sessions_survive_a_restart(
    tmp_path: Path, serve: Callable[[dict[str, str]], Server]
) -> None:
    env = environment(tmp_path)  # no WEBUI_SECRET_KEY, no WEBUI_JWT_SECRET_KEY
    first = serve(env)
    key_file = tmp_path / ".webui_secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key.strip()) >= 43  # at least 32 random bytes, base64url
    token = first.signup("admin@example.com")["token"]
    assert first.stop() in CLEAN_EXIT

    second = serve(env)
    assert key_file.read_text() == key
    assert second.me(token).status_code == 200


def test_invalid_configuration_stops_serve_and_names_every_bad_variable(tmp_path: Path) -> None:
    admin_password = "admin-password-never-printed-42"
    env = environment(
        tmp_path,
        ENABLE_SIGNUP="maybe",
        JWT_EXPIRES_IN="1y",
        WEBUI_SECRET_KEY=SECRET,
        WEBUI_ADMIN_EMAIL="admin@example.com",
        WEBUI_ADMIN_PASSWORD=admin_password,
    )
    started = time.monotonic()
    result = wardgate(env, "serve")
    assert result.returncode != 0
    assert time.monotonic() - started < 15
    for variable, value in (("ENABLE_SIGNUP", "maybe"), ("JWT_EXPIRES_IN", "1y")):
        assert variable in result.stderr and value in result.stderr, result.stderr
    for secret in (SECRET, admin_password):
        assert secret not in result.stderr + result.stdout
    assert not (tmp_path / "wardgate.db").exists()  # refused before touching anything

    check = wardgate(env, "check")
    assert check.returncode == 1
    assert "ENABLE_SIGNUP" in check.stderr and "JWT_EXPIRES_IN" in check.stderr
    assert SECRET not in check.stderr + check.stdout


# --- check, gen-secret, db -----------------------------------------------------------------


def test_check_prints_the_settings_with_secrets_redacted(tmp_path: Path) -> None:
    secrets = {
        "WEBUI_SECRET_KEY": SECRET,
        "WEBUI_ADMIN_PASSWORD": "admin-password-never-printed-42",
        "DATABASE_URL": "postgresql+psycopg://wardgate:db-password-never-printed@db.internal:5432/wardgate",
        "REDIS_URL": "redis://:redis-password-never-printed@cache.internal:6379/0",
    }
    env = environment(tmp_path, WEBUI_ADMIN_EMAIL="admin@example.com", **secrets)
    result = wardgate(env, "check")  # a real process: whatever it logs is in stdout/stderr too
    assert result.returncode == 0, result.stderr
    shown = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert shown["WEBUI_SECRET_KEY"] == "(set, redacted)"
    assert shown["WEBUI_ADMIN_PASSWORD"] == "(set, redacted)"
    assert shown["DATABASE_URL"] == "postgresql+psycopg://wardgate:***@db.internal:5432/wardgate"
    assert shown["REDIS_URL"] == "redis://:***@cache.internal:6379/0"
    assert shown["ENABLE_SIGNUP"] == "true" and shown["JWT_EXPIRES_IN"] == "604800s"
    for secret in ("never-printed", SECRET):
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    ["redis://:p@ss-never-printed@cache.internal:6379/0", "redis://user:p@ss-never-printed@cache.internal/0"],
)
def test_check_hides_a_url_password_that_contains_an_at_sign(
    tmp_path: Path, command: Callable[..., Outcome], url: str
) -> None:
    result = command(environment(tmp_path, WEBUI_SECRET_KEY=SECRET, REDIS_URL=url), "check")
    assert result.code == 0, result.err
    assert "REDIS_URL=redis://" in result.out
    assert "never-printed" not in result.out + result.err


def test_check_production_fails_on_the_default_configuration(
    tmp_path: Path, command: Callable[..., Outcome]
) -> None:
    default = command(environment(tmp_path), "check", "--production")
    assert default.code == 1
    assert "production finding" in default.err and "WEBUI_SECRET_KEY" in default.err
    hardened = environment(
        tmp_path,
        WEBUI_SECRET_KEY=SECRET,
        WEBUI_SESSION_COOKIE_SECURE="true",
        WEBUI_URL="https://chat.example.com",
        MFA_REQUIRED_ROLES="admin",
    )
    result = command(hardened, "check", "--production")
    assert result.code == 0, result.err


def test_gen_secret(tmp_path: Path, command: Callable[..., Outcome]) -> None:
    console_script = Path(sys.executable).parent / "wardgate"
    installed = subprocess.run(
        [str(console_script), "gen-secret"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    keys = [installed.stdout.strip(), command(environment(tmp_path), "gen-secret").out.strip()]
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", key), key
    assert keys[0] != keys[1]


def test_db_upgrade(tmp_path: Path, command: Callable[..., Outcome]) -> None:
    env = environment(tmp_path, WEBUI_SECRET_KEY=SECRET)
    for _ in range(2):  # and again: nothing left to do
        result = command(env, "db", "upgrade")
        assert result.code == 0, result.err
        assert "database is up to date" in result.out
    assert (tmp_path / "wardgate.db").is_file()


def test_db_current_history_and_downgrade(tmp_path: Path, command: Callable[..., Outcome]) -> None:
    env = environment(tmp_path, WEBUI_SECRET_KEY=SECRET)
    assert "no schema yet" in command(env, "db", "current").out
    history = command(env, "db", "history").out.splitlines()
    assert history[0].startswith("base -> 0001: ") and history[-1].startswith(
        f"-> {schema.head()} (head): ", 5
    )
    command(env, "db", "upgrade")
    assert command(env, "db", "current").out.strip() == f"{schema.head()} (head)"
    # Destructive: without a terminal it needs --yes, and says what it would undo.
    refused = command(env, "db", "downgrade", "0003")
    assert refused.code == 1 and "--yes" in refused.err and "0005 (the admin lock row)" in refused.err
    assert command(env, "db", "current").out.strip() == f"{schema.head()} (head)"
    done = command(env, "db", "downgrade", "0003", "--yes")
    assert done.code == 0, done.err
    assert "0004 (API keys" in done.err and "revision 0003" in done.out
    assert "behind" in command(env, "db", "current").out
    unknown = command(env, "db", "downgrade", "0042", "--yes")
    assert unknown.code == 1 and "unknown revision '0042'" in unknown.err
    assert command(env, "db", "upgrade").code == 0
    assert command(env, "db", "current").out.strip() == f"{schema.head()} (head)"


# --- the user CLI beside a running server -----------------------------------------------------------


def test_user_commands_reach_a_running_server(
    tmp_path: Path, serve: Callable[[dict[str, str]], Server], command: Callable[..., Outcome]
) -> None:
    env = environment(tmp_path, WEBUI_SECRET_KEY=SECRET)
    server = serve(env)
    admin = server.signup("admin@example.com")["token"]
    alice_password = "alice-password-never-printed"

    def user(*args: str, stdin: str = "") -> str:
        result = command(env, "user", *args, stdin=stdin)
        assert result.code == 0, result.err
        assert alice_password not in result.out + result.err
        return result.out

    def users_as(token: str) -> int:
        return server.get("/api/v1/users/", headers={"Authorization": f"Bearer {token}"}).status_code

    created = user(
        "add", "Alice@Example.com", "--name", "Alice", "--password-stdin", stdin=alice_password + "\n"
    )
    assert "alice@example.com (user)" in created
    listing = user("list")
    assert re.search(r"admin@example\.com\s+admin\s+active", listing)
    assert re.search(r"alice@example\.com\s+user\s+active\s+no-mfa\s+Alice", listing)

    alice = server.signin("alice@example.com", alice_password)
    # (Right after the CLI created her, the server's view may not know her yet; see
    # test_auth_api.py::test_an_account_changed_on_another_instance_is_not_refused_here.)
    assert eventually(lambda: users_as(alice) == 403)
    user("set-role", "alice@example.com", "admin")
    assert eventually(lambda: users_as(alice) == 200)  # the same token, promoted
    user("set-role", "alice@example.com", "user")
    assert eventually(lambda: users_as(alice) == 403)

    user("disable", "alice@example.com")
    assert eventually(lambda: refused_401(server.me(alice)))
    signin = server.post(
        "/api/v1/auths/signin", json={"email": "alice@example.com", "password": alice_password}
    )
    assert signin.status_code == 403
    assert re.search(r"alice@example\.com\s+user\s+disabled", user("list"))
    user("enable", "alice@example.com")
    alice = server.signin("alice@example.com", alice_password)

    user("revoke-sessions", "alice@example.com")
    assert eventually(lambda: refused_401(server.me(alice)))
    alice = server.signin("alice@example.com", alice_password)

    user("delete", "alice@example.com")
    assert eventually(lambda: refused_401(server.me(alice)))
    assert "alice@example.com" not in user("list")
    gone = server.post(
        "/api/v1/auths/signin", json={"email": "alice@example.com", "password": alice_password}
    )
    assert gone.status_code == 400
    assert server.me(admin).status_code == 200  # the admin was never touched


def test_user_commands_refuse_with_a_message(tmp_path: Path, command: Callable[..., Outcome]) -> None:
    env = environment(tmp_path, WEBUI_SECRET_KEY=SECRET)
    added = command(
        env, "user", "add", "admin@example.com", "--name", "Admin", "--password-stdin", stdin=PASSWORD
    )
    assert added.code == 0 and "admin@example.com (admin)" in added.out  # the first account
    last_admin = "The last administrator cannot be demoted, disabled or deleted."
    cases: list[tuple[tuple[str, ...], str, str]] = [
        (("delete", "admin@example.com"), "", last_admin),
        (("set-role", "admin@example.com", "user"), "", last_admin),
        (("disable", "admin@example.com"), "", last_admin),
        (("revoke-sessions", "nobody@example.com"), "", "no account with email nobody@example.com"),
        (("add", "ADMIN@example.com", "--name", "Again", "--password-stdin"), PASSWORD, "already registered"),
        (("add", "bob@example.com", "--name", "Bob", "--password-stdin"), "short", "at least 8 characters"),
    ]
    for args, stdin, message in cases:
        result = command(env, "user", *args, stdin=stdin + "\n")
        assert (result.code, result.out) == (1, ""), args
        assert message in result.err, (args, result.err)
    listing = command(env, "user", "list").out
    assert re.search(r"admin@example\.com\s+admin\s+active", listing)
    assert "bob@example.com" not in listing
