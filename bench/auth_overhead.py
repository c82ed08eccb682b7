"""What authentication costs: `GET /health` vs an authenticated `GET /api/v1/auths/`, with sign-in load.

One `wardgate serve` process is started in a temporary DATA_DIR (SQLite) on a free loopback port,
beside it a bare FastAPI app (bench/bare_app.py: one `async def` route, a constant JSON body, served
by wardgate's own `server.run()`: same uvloop, httptools protocol class and uvicorn options), and
the two are measured in four scenarios, one after the other, in the same run:

(0) bare `GET /bare`                     the framework's floor: server, FastAPI routing, JSON
(a) `GET /health`                        wardgate's floor: its middleware, routing, a JSON body
(b) `GET /api/v1/auths/` with a Bearer   (a) + JWT verification + the in-memory revocation check
(c) (b) while sign-ins run concurrently  Argon2id (~20 ms of CPU each) competing for the same cores

and prints requests/s, p50 and p99 latency, then the ratios the issues set goals for:
throughput b/a >= 0.6, p99(c) <= 3 x p99(b), throughput b/0 >= 0.8 and p99(b) <= 2 x p99(0).
Only one server is under load at a time; the other is idle.

The load comes from `wrk -t1` (one core left for the server) when installed (`apt-get install wrk`),
otherwise from a slower asyncio + httpx generator in this process. Absolute numbers depend on the
machine and its neighbours: compare the rows of one run with each other, not with another machine.
The server runs with default settings except the sign-in/sign-up rate limits (BENCH_RATE_LIMITS).

    .venv/bin/python bench/auth_overhead.py [--duration 10] [--connections 32] [--rounds 3]

One file on purpose (longer than the ~300-line guidance): a hand-run benchmark is easier to read,
copy and trust whole. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import harness
import httpx

HEALTH = "/health"
SESSION_USER = "/api/v1/auths/"
SIGNUP = "/api/v1/auths/signup"
SIGNIN = "/api/v1/auths/signin"
GOAL_THROUGHPUT = 0.6  # b/a must be at least this
GOAL_P99 = 3.0  # p99(c)/p99(b) must be at most this
GOAL_BARE_THROUGHPUT = 0.8  # b/0 must be at least this (issue 17)
GOAL_BARE_P99 = 2.0  # p99(b)/p99(0) must be at most this (issue 17)
BARE = "/bare"
BARE_APP = Path(__file__).with_name("bare_app.py")
STARTUP_SECONDS = 30.0
MAX_SIGNIN_CLIENTS = 16
# Every sign-in comes from 127.0.0.1, and the per-IP limits count successes too: at their defaults
# (20/3m) scenario (c) would measure fast 429s instead of Argon2. The limiter still runs on every
# attempt, only its thresholds are out of reach. --server-env can set them back.
BENCH_RATE_LIMITS = {
    "SIGNIN_RATE_LIMIT": "1000000/1m",
    "SIGNIN_IP_RATE_LIMIT": "1000000/1m",
    "SIGNUP_RATE_LIMIT": "1000/1m",
}
_TOKEN_FORM = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class Result:
    """One scenario's measurement."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors and timeouts


@dataclass(frozen=True)
class Account:
    """A benchmark account; repr hides the credentials so they are never printed."""

    email: str
    password: str = field(repr=False)
    token: str = field(repr=False)


@dataclass(frozen=True)
class Server:
    """The wardgate process under test."""

    base_url: str
    pid: int
    log_path: Path


LoadGenerator = Callable[[str, "str | None", int], Result]
"""(url, bearer token or None, seconds) -> Result."""


# --- the server ---------------------------------------------------------------------------------


def server_env(data_dir: Path, port: int, extra: list[str]) -> dict[str, str]:
    """A fresh environment (nothing inherited, so the shell's DATABASE_URL/REDIS_URL cannot leak in)."""
    env = {
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
        "GLOBAL_LOG_LEVEL": "WARNING",
        **BENCH_RATE_LIMITS,
    }
    for item in extra:  # KEY=VALUE, checked by parse_args
        key, _, value = item.partition("=")
        env[key] = value
    return env


@contextlib.contextmanager
def running_server(
    workdir: Path, extra_env: list[str], command: list[str] | None = None, probe: str = HEALTH
) -> Iterator[Server]:
    """Start `python -m wardgate serve` (or `command`), wait until `probe` answers, always stop it."""
    port = harness.free_port()
    name = "server" if command is None else Path(command[-1]).stem
    log_path = workdir / f"{name}.log"
    data_dir = workdir if command is None else workdir / name  # the bare app writes nothing; kept apart
    data_dir.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "wardgate", "serve"],
            env=server_env(data_dir, port, extra_env),
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = Server(f"http://127.0.0.1:{port}", process.pid, log_path)
        wait_until_healthy(server, process, probe)
        yield server
    finally:
        harness.stop_process(process)


def wait_until_healthy(server: Server, process: subprocess.Popen[bytes], probe: str = HEALTH) -> None:
    """Poll `probe` until it answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    name = server.log_path.stem
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail(server)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base_url + probe, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer within {STARTUP_SECONDS:.0f} s:\n{log_tail(server)}")


def log_tail(server: Server, lines: int = 30) -> str:
    """The end of the server's output (it never contains the secret key: it is not logged)."""
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def native_modules(pid: int) -> dict[str, bool | None]:
    """Whether uvloop and httptools are loaded in the server (uvicorn's 'auto' uses them if importable).

    Read from /proc/<pid>/maps, so the answer is about the real process, not this interpreter.
    """
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return {"uvloop": None, "httptools": None}
    return {name: f"/{name}/" in maps for name in ("uvloop", "httptools")}


# --- accounts and the sign-in load --------------------------------------------------------------


def sign_up(base_url: str, index: int) -> Account:
    """Create an account (the first one becomes admin) and return its session token."""
    email, password = f"bench-{index}@example.com", secrets.token_urlsafe(18)
    body = {"name": f"Bench {index}", "email": email, "password": password}
    response = httpx.post(base_url + SIGNUP, json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"sign-up of {email} failed: {response.status_code} {response.text[:200]}")
    return Account(email, password, response.json()["token"])


class SigninLoad:
    """Sign-ins from background threads, one account per thread, each in a loop (optionally paced).

    Every sign-in should succeed (see BENCH_RATE_LIMITS); `failures` counts those that did not.
    """

    def __init__(self, base_url: str, accounts: list[Account], rate: float) -> None:
        self._base_url = base_url
        self._accounts = accounts
        self._interval = len(accounts) / rate if rate > 0 else 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.latencies_ms: list[float] = []
        self.failures: Counter[str] = Counter()  # status code (or exception name) -> count
        self._started = 0.0
        self.elapsed = 0.0

    def __enter__(self) -> SigninLoad:
        self._started = time.perf_counter()
        for account in self._accounts:
            thread = threading.Thread(target=self._loop, args=(account,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.elapsed = time.perf_counter() - self._started

    def _loop(self, account: Account) -> None:
        body = {"email": account.email, "password": account.password}
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    outcome = str(client.post(SIGNIN, json=body).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                took = time.perf_counter() - started
                # Like an API client, not a browser: a kept `token` cookie on a POST without an
                # Origin header would (rightly) be refused by the CSRF middleware.
                client.cookies.clear()
                with self._lock:
                    self.latencies_ms.append(took * 1000)
                    if outcome != "200":
                        self.failures[outcome] += 1
                self._stop.wait(max(0.0, self._interval - took))

    def summary(self) -> str:
        """One line: how many sign-ins, their rate and latency, failures by status."""
        n, failed = len(self.latencies_ms), sum(self.failures.values())
        failures = f"{failed} failed" + (f" {dict(self.failures)}" if failed else "")
        if n < 2:
            return f"sign-ins during (c): {n} (too few to summarise), {failures}"
        p50, p99 = harness.percentiles(self.latencies_ms)
        return (
            f"sign-ins during (c): {n} ({n / self.elapsed:.1f}/s from {len(self._accounts)} clients), "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {failures}"
        )


# --- load generators ----------------------------------------------------------------------------


def wrk_generator(connections: int, workdir: Path) -> LoadGenerator:
    """`wrk -t1 --latency`, with a Lua script adding the Authorization header when there is a token."""

    def run(url: str, token: str | None, duration: int) -> Result:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
        if token is not None:
            command += ["-s", str(header_script(workdir, token))]
        done = subprocess.run(
            [*command, url], capture_output=True, text=True, timeout=duration + 60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        return parse_wrk(done.stdout)

    return run


def header_script(workdir: Path, token: str) -> Path:
    """Write the Lua script that sends the token (0600, inside the temporary directory)."""
    if not _TOKEN_FORM.match(token):
        raise ValueError("the session token is not a compact JWT; refusing to put it in a Lua string")
    path = workdir / "bearer.lua"
    path.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    path.chmod(0o600)
    return path


def parse_wrk(text: str) -> Result:
    """Parse `wrk --latency` output; raise ValueError naming what is missing."""
    r = harness.parse_wrk(text)
    return Result(r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors)


def python_generator(connections: int) -> LoadGenerator:
    """A fallback asyncio + httpx closed-loop generator (far slower than wrk: it measures itself too)."""

    def run(url: str, token: str | None, duration: int) -> Result:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return asyncio.run(_python_load(url, headers, duration, connections))

    return run


async def _python_load(url: str, headers: dict[str, str], duration: int, connections: int) -> Result:
    r = await harness.python_load(url, headers, duration, connections)
    return Result(r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors)


# --- the run ------------------------------------------------------------------------------------


def choose_generator(args: argparse.Namespace, workdir: Path) -> tuple[LoadGenerator, str]:
    """wrk when installed (and not --python-load), else the Python fallback with a note."""
    if args.python_load or shutil.which("wrk") is None:
        if not args.python_load:
            print("wrk is not installed (Debian/Ubuntu: apt-get install -y wrk); falling back to the")
            print("slower Python load generator, which competes with the server for CPU.")
        return python_generator(args.connections), "asyncio+httpx in this process"
    return wrk_generator(args.connections, workdir), "wrk -t1"


def measure_round(
    args: argparse.Namespace, load: LoadGenerator, servers: tuple[Server, Server], accounts: list[Account]
) -> tuple[dict[str, Result], SigninLoad]:
    """Scenarios (0), (a), (b), (c) back to back; (0) on the bare app, the rest on wardgate, whose
    accounts[0] is the reader."""
    bare, server = servers
    token = accounts[0].token
    results = {"0": load(bare.base_url + BARE, None, args.duration)}
    results["a"] = load(server.base_url + HEALTH, None, args.duration)
    results["b"] = load(server.base_url + SESSION_USER, token, args.duration)
    with SigninLoad(server.base_url, accounts[1:], args.signin_rate) as signins:
        time.sleep(1.0)  # let the sign-in threads reach a steady state first
        results["c"] = load(server.base_url + SESSION_USER, token, args.duration)
    return results, signins


def ratios(results: dict[str, Result]) -> tuple[float, float]:
    """(throughput b/a, p99 c/b)."""
    throughput = results["b"].requests_per_s / results["a"].requests_per_s
    return throughput, results["c"].p99_ms / results["b"].p99_ms


def bare_ratios(results: dict[str, Result]) -> tuple[float, float, float]:
    """(throughput a/0, throughput b/0, p99 b/0): wardgate against the bare FastAPI route."""
    floor = results["0"]
    return (
        results["a"].requests_per_s / floor.requests_per_s,
        results["b"].requests_per_s / floor.requests_per_s,
        results["b"].p99_ms / floor.p99_ms,
    )


def median_results(rounds: list[dict[str, Result]]) -> dict[str, Result]:
    """Each metric's median over the rounds (per scenario)."""
    merged = {}
    for key in rounds[0]:
        rs = [r[key] for r in rounds]
        merged[key] = Result(
            statistics.median(r.requests_per_s for r in rs),
            statistics.median(r.p50_ms for r in rs),
            statistics.median(r.p99_ms for r in rs),
            sum(r.requests for r in rs),
            sum(r.errors for r in rs),
        )
    return merged


def print_table(results: dict[str, Result], signin_clients: int) -> None:
    """The scenarios side by side."""
    labels = {
        "0": f"(0) bare FastAPI GET {BARE}",
        "a": f"(a) GET {HEALTH}",
        "b": f"(b) GET {SESSION_USER} (Bearer)",
        "c": f"(c) (b) + {signin_clients} sign-in clients",
    }
    print(f"{'scenario':<38} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7}")
    for key, label in labels.items():
        r = results[key]
        print(
            f"{label:<38} {r.requests_per_s:>8.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} "
            f"{r.requests:>9} {r.errors:>7}"
        )


def print_ratios(throughput: float, p99: float) -> None:
    """The two goals, with PASS/MISS."""
    ok_t = "PASS" if throughput >= GOAL_THROUGHPUT else "MISS"
    ok_p = "PASS" if p99 <= GOAL_P99 else "MISS"
    print(f"throughput b/a   {throughput:5.2f}  (goal >= {GOAL_THROUGHPUT})  {ok_t}")
    print(f"p99 c/b          {p99:5.2f}  (goal <= {GOAL_P99})  {ok_p}")


def print_bare_ratios(health: float, throughput: float, p99: float) -> None:
    """wardgate against the bare route: the issue-17 goals, with PASS/MISS, and /health for scale."""
    ok_t = "PASS" if throughput >= GOAL_BARE_THROUGHPUT else "MISS"
    ok_p = "PASS" if p99 <= GOAL_BARE_P99 else "MISS"
    print(f"throughput a/0   {health:5.2f}  (wardgate's /health against the bare route)")
    print(f"throughput b/0   {throughput:5.2f}  (goal >= {GOAL_BARE_THROUGHPUT})  {ok_t}")
    print(f"p99 b/0          {p99:5.2f}  (goal <= {GOAL_BARE_P99})  {ok_p}")


def describe_setup(args: argparse.Namespace, server: Server, bare: Server, generator: str) -> None:
    """What was measured with what, so that two runs can be compared honestly."""
    native = native_modules(server.pid)
    shown = {k: "unknown" if v is None else ("yes" if v else "NO") for k, v in native.items()}
    pace = f"paced at {args.signin_rate:g}/s in total" if args.signin_rate > 0 else "unpaced (closed loop)"
    print(f"server: pid {server.pid}, {server.base_url}, ", end="")
    print(f"uvloop {shown['uvloop']}, httptools {shown['httptools']}")
    print(f"bare app: pid {bare.pid}, {bare.base_url}{BARE}, same server.run() and protocol class")
    print(f"load: {generator}, {args.connections} connections, {args.duration} s per scenario, ", end="")
    print(f"{args.rounds} round(s); {_cores()} cores")
    print(f"sign-ins in (c): {args.signin_clients} clients, {pace}")
    if False in native.values():
        print("WARNING: uvicorn runs without uvloop/httptools; install uvicorn[standard].")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def report(rounds: list[tuple[dict[str, Result], SigninLoad]], signin_clients: int) -> None:
    """The table (medians when there are several rounds), the sign-in load, the ratios."""
    print()
    for number, (results, signins) in enumerate(rounds, 1):
        if len(rounds) > 1:
            throughput, p99 = ratios(results)
            _, over_bare, p99_bare = bare_ratios(results)
            print(
                f"round {number}: b/a {throughput:.2f}, p99 c/b {p99:.2f}, b/0 {over_bare:.2f}, "
                f"p99 b/0 {p99_bare:.2f}; {signins.summary()}"
            )
    table = median_results([r for r, _ in rounds])
    if len(rounds) > 1:
        print("\nmedian over rounds:")
    print_table(table, signin_clients)
    if len(rounds) == 1:
        print(rounds[0][1].summary())
    if any(signins.failures for _, signins in rounds):
        print("WARNING: some sign-ins failed, so (c) ran with less Argon2 work than it claims.")
    if any(r.errors for r in table.values()):
        print("WARNING: some requests failed (non-2xx, socket errors or timeouts); see the errors column.")
    print()
    print_ratios(*ratios(table))
    print_bare_ratios(*bare_ratios(table))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat (a)(b)(c) and report medians")
    parser.add_argument(
        "--signin-clients", type=int, default=3, help=f"sign-in threads in (c), 1..{MAX_SIGNIN_CLIENTS}"
    )
    parser.add_argument("--signin-rate", type=float, default=0.0, help="total sign-ins/s (0: unpaced)")
    parser.add_argument(
        "--python-load", action="store_true", help="use the Python generator even if wrk exists"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server setting"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.signin_clients <= MAX_SIGNIN_CLIENTS:
        parser.error(f"--signin-clients must be 1..{MAX_SIGNIN_CLIENTS}")
    if args.duration < 1 or args.connections < 1 or args.rounds < 1:
        parser.error("--duration, --connections and --rounds must be positive")
    if any(not item.partition("=")[0] or "=" not in item for item in args.server_env):
        parser.error("--server-env expects KEY=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the server, create the accounts, warm up, measure, stop the server, report."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-") as tmp:
        workdir = Path(tmp)
        load, generator = choose_generator(args, workdir)
        bare_command = [sys.executable, str(BARE_APP)]
        with (
            running_server(workdir, args.server_env) as server,
            running_server(workdir, args.server_env, bare_command, probe=BARE) as bare,
        ):
            accounts = [sign_up(server.base_url, i) for i in range(args.signin_clients + 1)]
            load(bare.base_url + BARE, None, 2)  # warm-ups, not reported
            load(server.base_url + HEALTH, None, 2)
            load(server.base_url + SESSION_USER, accounts[0].token, 2)
            describe_setup(args, server, bare, generator)
            servers = (bare, server)
            rounds = [measure_round(args, load, servers, accounts) for _ in range(args.rounds)]
    report(rounds, args.signin_clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
