"""`UVICORN_WORKERS=2` without Redis, on the default SQLite: the worker processes act as one.

Each check pins two keep-alive connections to two different worker processes (the server side of
a connection is found in /proc), acts through one and observes through the other:
- a sign-out on one worker is refused by the other within 100 ms (the poll alone takes seconds);
- wrong passwords spread over both workers are limited exactly as on one process;
- a request budget is spent exactly, with concurrent calls landing on both workers;
- an API key's rate limit is spent exactly by calls alternating between the workers;
- `/metrics`, answered by either worker, counts the requests of both.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PASSWORD, SECRET
from tests.models.deployment import fake_models_process
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow

PROPAGATION_BUDGET = 0.100  # seconds, the figure
ADMIN = "admin@example.com"
METRICS_TOKEN = "m" * 40
_ips = (f"198.19.{n // 250}.{n % 250 + 1}" for n in itertools.count())


@dataclass
class Workers:
    """A `wardgate serve` with two worker processes."""

    base: str
    port: int
    pids: tuple[int, ...]


def _children(parent: int) -> tuple[int, ...]:
    """The worker processes: children of the supervisor that serve (not multiprocessing's tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return tuple(sorted(found))


def serving_pid(connection: http.client.HTTPConnection, pids: tuple[int, ...]) -> int:
    """The worker holding the server side of `connection` (its socket inode, from /proc/net/tcp)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        local_port = int(fields[1].split(":")[1], 16)
        if remote_port == client_port and local_port == connection.port:
            inode = fields[9]
    assert inode is not None, "the server side of the connection was not found"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


Pair = tuple[http.client.HTTPConnection, http.client.HTTPConnection]


def pinned(workers: Workers, timeout: float = 20.0) -> dict[int, http.client.HTTPConnection]:
    """One open keep-alive connection to each worker (new connections until both are reached; a
    worker that is still starting takes none until it serves)."""
    found: dict[int, http.client.HTTPConnection] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", workers.port, timeout=10)
        request(connection, "GET", "/health")
        pid = serving_pid(connection, workers.pids)
        if pid in found:
            connection.close()
            time.sleep(0.01)
        else:
            found[pid] = connection
        if len(found) == len(workers.pids):
            return found
    for connection in found.values():
        connection.close()
    raise AssertionError(f"in {timeout:.0f} s, connections reached only workers {sorted(found)}")


def request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = None,
    ip: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if ip:
        headers["X-Forwarded-For"] = ip
    connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    response = connection.getresponse()
    raw = response.read()
    return response.status, json.loads(raw) if raw else None


def _running_workers(supervisor: int, *, replaced: int | None = None) -> tuple[int, ...]:
    """The supervisor's two workers once both run (and `replaced`, a worker killed, is gone)."""
    deadline = time.monotonic() + 30
    while len(found := _children(supervisor)) < 2 or replaced in found:
        assert time.monotonic() < deadline, "the two workers did not start"
        time.sleep(0.1)
    return found


@contextlib.contextmanager
def _two_workers(env: dict[str, str]) -> Iterator[tuple[Workers, int]]:
    """`wardgate serve` with `env` (two workers), once both run: the workers and the supervisor's pid."""
    pids: list[int] = []
    with wardgate_process(env, pids=pids, timeout=60) as base:
        yield Workers(base, int(base.rsplit(":", 1)[1]), _running_workers(pids[0])), pids[0]


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    data = tmp_path_factory.mktemp("workers")
    with fake_models_process() as models:
        yield from _serving(data, models)


def _serving(data: Path, models: str) -> Iterator[Workers]:
    env = {
        "WEBUI_ADMIN_EMAIL": ADMIN,
        "WEBUI_ADMIN_PASSWORD": PASSWORD,
        "OPENAI_API_BASE_URL": f"{models}/v1",
        "DATA_DIR": str(data),
        "UVICORN_WORKERS": "2",
        "WEBUI_SECRET_KEY": SECRET,
        "DEFAULT_USER_ROLE": "user",
        "SIGNUP_RATE_LIMIT": "1000/1h",
        "SIGNIN_RATE_LIMIT": "5/3m",
        "SIGNIN_IP_RATE_LIMIT": "1000/3m",
        "SESSION_SYNC_INTERVAL": "5",
        "ENABLE_API_KEYS": "true",
        "METRICS_TOKEN": METRICS_TOKEN,  # the poll alone would take seconds: only the channel is fast enough
    }
    with _two_workers(env) as (workers, _supervisor):
        yield workers


@pytest.fixture
def pair(workers: Workers) -> Iterator[Pair]:
    """A keep-alive connection to each of the two workers, closed after the test."""
    connections = pinned(workers)
    try:
        first, second = connections.values()
        yield first, second
    finally:
        for connection in connections.values():
            connection.close()


def sign_up(connection: http.client.HTTPConnection, email: str) -> dict[str, Any]:
    body = {"name": "Someone", "email": email, "password": PASSWORD}
    status, answer = request(connection, "POST", "/api/v1/auths/signup", body)
    assert status == 200, answer
    found: dict[str, Any] = answer
    return found


def test_a_sign_out_on_one_worker_is_refused_by_the_other_within_100_ms(pair: Pair) -> None:
    first, second = pair
    sign_up(first, "ada@example.com")
    lags = []
    for _ in range(5):
        status, answer = request(
            first, "POST", "/api/v1/auths/signin", {"email": "ada@example.com", "password": PASSWORD}
        )
        assert status == 200, answer
        token = answer["token"]
        assert request(second, "GET", "/api/v1/auths/", token=token)[0] == 200
        assert request(first, "GET", "/api/v1/auths/signout", token=token)[0] == 200
        ended = time.monotonic()
        while (status := request(second, "GET", "/api/v1/auths/", token=token)[0]) == 200:
            assert time.monotonic() - ended < 3, "the other worker still accepts the token"
        assert status == 401
        lags.append(time.monotonic() - ended)
    assert max(lags) <= PROPAGATION_BUDGET, lags


def test_wrong_passwords_over_both_workers_are_limited_as_on_one(pair: Pair) -> None:
    first, second = pair
    sign_up(first, "bob@example.com")
    wrong = {"email": "bob@example.com", "password": "not-the-password-1"}
    ip = next(_ips)  # the limit is per account and client address
    statuses = [
        request((first, second)[n % 2], "POST", "/api/v1/auths/signin", wrong, ip=ip)[0] for n in range(10)
    ]
    assert statuses == [400] * 5 + [429] * 5  # each worker on its own would have allowed ten


def test_a_request_budget_is_spent_exactly_by_calls_on_both_workers(workers: Workers, pair: Pair) -> None:
    first, second = pair
    status, admin = request(first, "POST", "/api/v1/auths/signin", {"email": ADMIN, "password": PASSWORD})
    assert status == 200, admin
    person = sign_up(first, "cat@example.com")
    budget = {"token_budget": {"tokens": 1_000_000, "period": "1d", "requests": 7}}
    update = f"/api/v1/users/{person['id']}/update"
    status, answer = request(first, "POST", update, budget, token=admin["token"])
    assert status == 200, answer
    deadline = time.monotonic() + 3  # the other worker has the change (through the shared file)
    while not request(second, "GET", "/api/v1/usage", token=person["token"])[1]["budgets"]:
        assert time.monotonic() < deadline, "the budget did not reach the other worker"

    def call(n: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", workers.port, timeout=30)
        try:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            return request(connection, "POST", "/openai/chat/completions", body, token=person["token"])[0]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(pool.map(call, range(20)))
    assert statuses == [200] * 7 + [429] * 13, statuses


def test_an_api_keys_rate_limit_is_spent_exactly_over_both_workers(pair: Pair) -> None:
    first, second = pair
    status, admin = request(first, "POST", "/api/v1/auths/signin", {"email": ADMIN, "password": PASSWORD})
    assert status == 200, admin
    spec = {"name": "limited", "rate_limit": "6/1m"}
    status, created = request(first, "POST", "/api/v1/auths/api_keys", spec, token=admin["token"])
    assert status == 200, created
    key = created["api_key"]
    answers = [request((second, first)[n % 2], "GET", "/openai/models", token=key) for n in range(12)]
    assert [status for status, _ in answers] == [200] * 6 + [429] * 6  # each worker on its own allowed 6
    assert answers[-1][1]["detail"].startswith("Rate limit exceeded for this API key.")


def _health_requests(metrics_text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("wardgate_http_request_duration_seconds_count{") and 'route="health"' in line
    )


def test_metrics_from_either_worker_count_the_requests_of_both(pair: Pair) -> None:
    first, second = pair

    def scrape(connection: http.client.HTTPConnection) -> str:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()

    before = _health_requests(scrape(first))
    for _ in range(7):
        assert request(first, "GET", "/health")[0] == 200
    for _ in range(5):
        assert request(second, "GET", "/health")[0] == 200
    assert _health_requests(scrape(second)) - before == 12
    assert _health_requests(scrape(first)) - before == 12


def test_a_replaced_worker_runs_the_settings_of_the_start_not_an_edited_env_file(tmp_path: Path) -> None:
    """The supervisor replaces a worker that dies; it must not pick up a `.env` edited since (here a
    new secret key: the replaced worker would refuse every token the other issues)."""
    (tmp_path / ".env").write_text(f"WEBUI_SECRET_KEY={SECRET}\n")
    env = {"DATA_DIR": str(tmp_path), "UVICORN_WORKERS": "2", "WEBUI_ADMIN_EMAIL": ADMIN}
    env["WEBUI_ADMIN_PASSWORD"] = PASSWORD
    with _two_workers(env) as (started, supervisor):
        (tmp_path / ".env").write_text("WEBUI_SECRET_KEY=" + "n" * 48 + "\n")  # an operator prepares
        os.kill(started.pids[0], 9)
        now = _running_workers(supervisor, replaced=started.pids[0])
        connections = pinned(Workers(started.base, started.port, now))
        try:
            one, other = connections.values()
            login = {"email": ADMIN, "password": PASSWORD}
            for signer, checker in ((one, other), (other, one)):
                status, answer = request(signer, "POST", "/api/v1/auths/signin", login)
                assert status == 200, answer
                assert request(checker, "GET", "/api/v1/auths/", token=answer["token"])[0] == 200
        finally:
            for connection in connections.values():
                connection.close()


def test_a_spray_from_one_address_over_both_workers_is_limited_exactly(tmp_path: Path) -> None:
    """Wrong passwords for many accounts from one address, all at once over both workers: the
    per-address limit (checked, verified and counted under the address's lock) lets exactly its
    number through; each worker locking on its own let one more through per worker."""
    env = {"DATA_DIR": str(tmp_path), "UVICORN_WORKERS": "2", "WEBUI_SECRET_KEY": SECRET}
    env |= {"SIGNIN_IP_RATE_LIMIT": "20/3m", "SIGNIN_RATE_LIMIT": "100/3m"}
    with _two_workers(env) as (workers, _supervisor):
        port = workers.port
        for connection in pinned(workers).values():  # both serve
            connection.close()
        ip = next(_ips)

        def spray(n: int) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                wrong = {"email": f"spray{n}@example.com", "password": "not-the-password-1"}
                return request(connection, "POST", "/api/v1/auths/signin", wrong, ip=ip)[0]
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = sorted(pool.map(spray, range(40)))
    assert statuses.count(400) == 20, statuses
