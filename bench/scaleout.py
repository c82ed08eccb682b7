"""Scale-out: authenticated requests/s on one and on three instances, and revocation propagation delay.

Three `wardgate serve` processes share one fresh PostgreSQL database and a private `redis-server`
(started here on a free loopback port, stopped at the end), exactly the supported scale-out setup.

(1) throughput   `GET /api/v1/auths/` with a Bearer token (JWT check + in-memory revocation view),
                 first all load on instance A, then the same load spread over A, B and C (what a
                 round-robin balancer does). The load comes from three `wrk -t1` processes in both
                 runs (one per target in the second), so the generator costs the same CPU in both;
                 without wrk, a slower asyncio + httpx generator round-robins in this process.
(2) propagation  N sign-outs on A; for each, the time from the sign-out's response until B and C
                 refuse the token (each polled every millisecond): p50, p99, max.

On a two-core machine three servers, three load generators, PostgreSQL and Redis all share the same
two cores: three instances cannot be faster than one there, and the table says so honestly. What
scale-out buys on such a box is availability, not throughput; on more cores it buys both.

    .venv/bin/python bench/scaleout.py [--duration 8] [--connections 30] [--signouts 60]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:55432/postgres]

With `--workers`, one instance instead (SQLite, no Redis, nothing else to start) with
`UVICORN_WORKERS=1` and then `2` under the same `wrk` load, side by side, and the revocation delay
between its workers (fresh connections land on either).

The PostgreSQL server is the one `./scripts/services start` runs (its URL is the default); a
database is created for the run and dropped afterwards. Everything listens on loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import harness
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

SESSION_USER = "/api/v1/auths/"
SERVICES_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
STARTUP_SECONDS = 60.0
POLL_SECONDS = 0.001
GIVE_UP_SECONDS = 5.0
_TOKEN_FORM = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class Load:
    """One throughput measurement."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


# --- the services ---------------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (no persistence); yield its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (./scripts/setup-system installs it)")
    port = harness.free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        harness.stop_process(process)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """Create an empty database on the PostgreSQL server; drop it afterwards."""
    name = f"wg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        raise SystemExit(
            f"cannot create a database at {server_url} ({exc}); start ./scripts/services"
        ) from None
    try:
        yield f"{server_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def instances(workdir: Path, env: dict[str, str], count: int) -> Iterator[list[str]]:
    """Start `count` `wardgate serve` processes at once; yield their base URLs; always stop them."""
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(count):
            port, data_dir = harness.free_port(), workdir / f"instance-{index}"
            data_dir.mkdir()
            full = {**env, "DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1"}
            with (data_dir / "wardgate.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "wardgate", "serve"],
                        env=full,
                        cwd=data_dir,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + STARTUP_SECONDS
        for url, process in zip(urls, processes, strict=True):
            wait_ready(url, process, deadline)
        yield urls
    finally:
        for process in processes:
            harness.stop_process(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Poll /health?ready=true until the revocation channel is connected (or, alone, not needed)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"wardgate at {url} exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            body = httpx.get(f"{url}/health?ready=true", timeout=1).json()
            channel_ready = body.get("revocation_channel") in ("connected", "not configured")
            if channel_ready and body.get("sessions") == "synchronised":
                return
        time.sleep(0.1)
    raise RuntimeError(f"wardgate at {url} was not ready within {STARTUP_SECONDS:.0f} s")


# --- accounts -------------------------------------------------------------------------------------

_addresses = (f"198.18.{n // 250 % 250}.{n % 250 + 1}" for n in itertools.count())
_address_lock = threading.Lock()


def client_ip() -> str:
    """A fresh client address (sent as X-Forwarded-For; loopback is a trusted proxy by default).

    Every refused token counts against AUTH_FAILURE_RATE_LIMIT per client IP; one address per
    request keeps the propagation figures free of 429s.
    """
    with _address_lock:
        return next(_addresses)


def api_client(base_url: str) -> httpx.Client:
    """An API client that keeps no cookies (tokens travel as Bearer headers only)."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(base_url=base_url, timeout=30, cookies=jar, follow_redirects=False)


def sign_up(url: str, email: str, password: str) -> None:
    """Create the benchmark account."""
    body = {"name": "Bench", "email": email, "password": password}
    response = httpx.post(f"{url}/api/v1/auths/signup", json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"sign-up failed: {response.status_code} {response.text[:200]}")


def sign_in(url: str, email: str, password: str) -> str:
    """A new session's token."""
    body = {"email": email, "password": password}
    response = httpx.post(
        f"{url}/api/v1/auths/signin", json=body, headers={"X-Forwarded-For": client_ip()}, timeout=30
    )
    if response.status_code != 200:
        raise RuntimeError(f"sign-in failed: {response.status_code} {response.text[:200]}")
    token: str = response.json()["token"]
    return token


# --- throughput -----------------------------------------------------------------------------------


def wrk_load(targets: list[str], token: str, connections: int, duration: int, workdir: Path) -> Load:
    """One `wrk -t1` process per target URL, all at once; summed requests/s, the worst p50/p99."""
    if not _TOKEN_FORM.match(token):
        raise ValueError("the session token is not a compact JWT; refusing to put it in a Lua string")
    script = workdir / "bearer.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    script.chmod(0o600)
    per_target = max(1, connections // len(targets))
    command = ["wrk", "-t1", f"-c{per_target}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    runs = [
        subprocess.Popen(
            [*command, "-s", str(script), target + SESSION_USER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for target in targets
    ]
    outputs = [run.communicate(timeout=duration + 60) for run in runs]
    results = [parse_wrk(out) for out, _err in outputs]
    return Load(
        requests_per_s=sum(r.requests_per_s for r in results),
        p50_ms=max(r.p50_ms for r in results),
        p99_ms=max(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
    )


def parse_wrk(output: str) -> Load:
    """Requests/s, p50, p99 and errors from `wrk --latency` output."""
    r = harness.parse_wrk(output)
    return Load(r.requests_per_s, r.p50_ms, r.p99_ms, r.errors)


def python_load(targets: list[str], token: str, connections: int, duration: int) -> Load:
    """Fallback without wrk: an asyncio + httpx closed loop, round-robin over the targets."""
    return asyncio.run(_python_load(targets, token, connections, duration))


async def _python_load(targets: list[str], token: str, connections: int, duration: int) -> Load:
    latencies: list[float] = []
    errors = 0
    turn = itertools.cycle(targets)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10) as client:
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    ok = (await client.get(next(turn) + SESSION_USER)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Load(len(latencies) / elapsed, p50, p99, errors)


# --- propagation ----------------------------------------------------------------------------------


def refused_after(client: httpx.Client, token: str, since: float) -> float:
    """Poll until the instance refuses `token` (401); seconds after `since`."""
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        response = client.get(SESSION_USER, headers={**headers, "X-Forwarded-For": client_ip()})
        now = time.perf_counter()
        if response.status_code == 401:
            return now - since
        if response.status_code != 200:
            raise RuntimeError(f"unexpected {response.status_code}: {response.text[:200]}")
        if now - since > GIVE_UP_SECONDS:
            return float("inf")
        time.sleep(POLL_SECONDS)


def propagation(urls: list[str], email: str, password: str, signouts: int) -> list[float]:
    """Sign out N sessions on the first instance; delays until the others refuse each (seconds)."""
    tokens = [sign_in(urls[index % len(urls)], email, password) for index in range(signouts)]
    clients = [api_client(url) for url in urls]
    delays: list[float] = []
    try:
        with ThreadPoolExecutor(max_workers=len(urls) - 1) as pool:
            for token in tokens:
                for client in clients[1:]:  # every instance accepts it before the sign-out
                    status = client.get(
                        SESSION_USER, headers={"Authorization": f"Bearer {token}"}
                    ).status_code
                    if status != 200:
                        raise RuntimeError(f"a fresh token was refused ({status})")
                response = clients[0].post(
                    "/api/v1/auths/signout",
                    headers={"Authorization": f"Bearer {token}", "X-Forwarded-For": client_ip()},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"sign-out failed: {response.status_code}")
                since = time.perf_counter()
                delays.extend(pool.map(lambda c, t=token, s=since: refused_after(c, t, s), clients[1:]))
    finally:
        for client in clients:
            client.close()
    return delays


def percentile(values: list[float], percent: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(percent / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# --- the run --------------------------------------------------------------------------------------


def workers_main(args: argparse.Namespace) -> int:
    """`--workers`: one instance on SQLite without Redis, `UVICORN_WORKERS` 1 then 2, same load."""
    email, password = "bench@example.com", secrets.token_urlsafe(18)
    started = time.monotonic()
    runs: dict[str, Load] = {}
    delays: list[float] = []
    for count in (1, 2):
        with tempfile.TemporaryDirectory(prefix="wardgate-workers-") as tmp:
            env = {
                "UVICORN_WORKERS": str(count),
                "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
                "GLOBAL_LOG_LEVEL": "WARNING",
            }
            with instances(Path(tmp), env, 1) as (url,):
                time.sleep(3)  # the health check answers once one worker serves; let the others start
                sign_up(url, email, password)
                token = sign_in(url, email, password)
                runs[f"{count} worker{'s' if count > 1 else ''}"] = wrk_load(
                    [url], token, args.connections, args.duration, Path(tmp)
                )
                if count == 2:
                    delays = propagation([url, url, url], email, password, args.signouts)
    cores = len(os.sched_getaffinity(0))
    print(f"\nwardgate UVICORN_WORKERS, SQLite, no Redis, loopback, wrk -t1 -c{args.connections}")
    print(f"{'GET /api/v1/auths/ (Bearer)':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, load in runs.items():
        figures = f"{load.requests_per_s:>9.0f} {load.p50_ms:>8.2f} {load.p99_ms:>8.2f} {load.errors:>7}"
        print(f"{label:<30} {figures}")
    one, two = runs.values()
    print(f"{'ratio 2 / 1':<30} {two.requests_per_s / one.requests_per_s:>9.2f}")
    found = [d * 1000 for d in delays if d != float("inf")]
    print(f"\nrevocation across workers: {args.signouts} sign-outs, until fresh connections refuse the token")
    print(f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'>100 ms':>8} {'never':>6}")
    print(
        f"{percentile(found, 50):>8.1f} {percentile(found, 99):>8.1f} {max(found):>8.1f} "
        f"{sum(d > 100 for d in found):>8} {len(delays) - len(found):>6}"
    )
    print(f"\n(run took {time.monotonic() - started:.0f} s; machine: {cores} CPU(s), shared with wrk)")
    return 0


def main() -> int:
    """Run both measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per throughput run")
    parser.add_argument("--connections", type=int, default=30, help="concurrent connections in total")
    parser.add_argument("--signouts", type=int, default=60, help="sign-outs for the propagation figures")
    parser.add_argument("--postgres-url", default=SERVICES_POSTGRES, help="a PostgreSQL server (admin URL)")
    parser.add_argument(
        "--workers", action="store_true", help="instead: 1 vs 2 worker processes, one instance"
    )
    args = parser.parse_args()
    if args.workers:
        return workers_main(args)
    use_wrk = shutil.which("wrk") is not None
    email, password = "bench@example.com", secrets.token_urlsafe(18)
    started = time.monotonic()

    with (
        tempfile.TemporaryDirectory(prefix="wardgate-scaleout-") as tmp,
        private_redis(Path(tmp)) as redis_url,
        fresh_database(args.postgres_url) as database_url,
    ):
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
            "GLOBAL_LOG_LEVEL": "WARNING",
        }
        with instances(Path(tmp), env, 3) as urls:
            sign_up(urls[0], email, password)
            token = sign_in(urls[0], email, password)
            runs: dict[str, Load] = {}
            for label, targets in (("1 instance (A)", [urls[0]] * 3), ("3 instances (A, B, C)", urls)):
                if use_wrk:
                    runs[label] = wrk_load(targets, token, args.connections, args.duration, Path(tmp))
                else:
                    runs[label] = python_load(sorted(set(targets)), token, args.connections, args.duration)
            delays = propagation(urls, email, password, args.signouts)

    generator = "3 x wrk -t1" if use_wrk else "asyncio + httpx (in this process; wrk not installed)"
    print(f"\nwardgate scale-out, loopback, load from {generator}, {args.connections} connections in total")
    print(f"{'GET /api/v1/auths/ (Bearer)':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for label, load in runs.items():
        print(
            f"{label:<30} {load.requests_per_s:>9.0f} "
            f"{load.p50_ms:>8.2f} {load.p99_ms:>8.2f} {load.errors:>7}"
        )
    one, three = runs.values()
    print(f"{'ratio 3 / 1':<30} {three.requests_per_s / one.requests_per_s:>9.2f}")
    lost = sum(1 for d in delays if d == float("inf"))
    found = [d * 1000 for d in delays if d != float("inf")]
    print(
        f"\nrevocation propagation: {args.signouts} sign-outs on A, "
        f"until B and C refuse ({len(delays)} samples)"
    )
    print(f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8} {'>100 ms':>8} {'never':>6}")
    print(
        f"{percentile(found, 50):>8.1f} {percentile(found, 99):>8.1f} {max(found):>8.1f} "
        f"{statistics.fmean(found):>8.1f} {sum(d > 100 for d in found):>8} {lost:>6}"
    )
    print(f"\n(run took {time.monotonic() - started:.0f} s; machine: {len(os.sched_getaffinity(0))} CPU(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
