"""What the reverse proxy costs: the fake upstream directly, through nginx, through wardgate.

One run starts the fake upstream (tests/fakes/upstream.py), one `wardgate serve` in front of it
(temporary DATA_DIR with SQLite; UPSTREAM_URL and OPENAI_API_BASE_URL point at the fake) and the
references, all on loopback and stopped by process id: Debian's nginx relaying to the same upstream
with keep-alive (`upstream { keepalive 32; }`, HTTP/1.1, one process: `master_process off`); a raw
ASGI callable on wardgate's own `server.run()` (bench/bare_app.py --raw: the same uvloop, protocol
class and options); and forward auth, nginx relaying with `auth_request` to a second wardgate (a
one-site FORWARD_AUTH_FILE; the nginx configuration of tests/forward_auth/proxies.py, which is the
README's). It signs up one user on each wardgate and measures, interleaved so that the machine's
noise hits every row alike:

(1) small JSON `GET /app/x`: requests/s, p50, p99 (wrk -t1 when installed, else asyncio + httpx),
    and each server's CPU time per request, for the rows direct, nginx, through (wardgate), forward
    auth (nginx asking wardgate), own (`GET /api/v1/auths/` on wardgate: one of its own routes,
    authenticated, no upstream) and bare ASGI (the server stack's floor); the ratios of the medians
    and of each round (the rows of one round run back to back, one at a time)
(2) one SSE stream of 1,000 chunks: time to first chunk and total time, p50 over 20 runs each;
    through wardgate both as a metered model call (`/openai/chat/completions`: the model read,
    usage asked for and taken out again, the answer tapped, the record written) and on a path that
    is no model call (`/openai/stream`, the same stream), so that metering's cost shows apart; and
    through nginx (unbuffered, `proxy_buffering off` as for model streams), the added TTFB of a
    relay that costs almost no CPU, in the same run
(3) 1, 32 and 256 concurrent SSE streams (50 chunks, 20 ms apart): completed, errors, wall time
(4) 1,000 SSE streams held open at once (20 chunks, 500 ms apart): completed, errors, and RSS per
    open stream of the serving process (wardgate through it; the fake itself directly), from
    /proc/PID/status VmRSS: (RSS while all are open - RSS before) / N

then the goals (issue 18): requests/s through/nginx >= 0.8, p99 through/nginx <= 2, wardgate's CPU
per proxied request below the upstream's own (and the earlier through/direct >= 0.6); added TTFB
p50 < 1 ms; metered/unmetered TTFB and total time <= 1.05; every stream of (3) and (4) complete
without error. Absolute numbers depend on the machine: compare rows of one run.

Streams are read by a minimal HTTP/1.1 client on raw asyncio sockets (`Connection: close`, scanning
for `data: [DONE]`), not httpx: with 1,000 streams a full client's per-chunk cost would compete for
the cores with the servers under test. (4) runs first, direct before through, so that each measured
process meets its first burst there and its RSS baseline is not lowered by memory that an earlier
burst freed and the allocator kept. The file is longer than the ~300-line guidance because a
benchmark is one standalone script, run by hand.

    .venv/bin/python bench/proxy.py [--duration 5] [--rounds 2] [--held 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import harness
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fake upstream and the documented nginx configuration live in tests/

from tests.forward_auth import proxies  # noqa: E402  (after the path it needs)

BARE_APP = Path(__file__).with_name("bare_app.py")
PROBE = "/app/x"  # the app upstream (UPSTREAM_URL): a small JSON answer
OWN = "/api/v1/auths/"  # one of wardgate's own authenticated routes (FastAPI), for comparison
CHAT_DIRECT = "/v1/chat/completions"
CHAT_THROUGH = "/openai/chat/completions"  # OPENAI_API_BASE_URL is the fake's /v1
CHAT_UNMETERED = "/openai/stream"  # the same stream on a path that is no model call: not metered
SIGNUP = "/api/v1/auths/signup"
DONE = b"data: [DONE]"
GOALS = {  # (1)'s ratios with a goal (issue 18): comparison, bound
    "req/s through/nginx": (">=", 0.8),
    "p99 through/nginx": ("<=", 2.0),
    "CPU/req wardgate/upstream": ("<", 1.0),  # wardgate's CPU per proxied request below the upstream's
    "req/s through/direct": (">=", 0.6),  # the earlier goal, kept for comparison with older runs
}
GOAL_ADDED_TTFB_MS = 1.0  # p50 time to first chunk added by wardgate, less than
GOAL_METERING = 1.05  # metered / unmetered stream, TTFB and total time, at most
STARTUP_SECONDS = 30.0
_CHUNK_FRAMING = re.compile(rb"\r\n[0-9a-fA-F]+\r\n")  # SSE bodies here never contain CRLF
_TOKEN_FORM = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")

# The reference: nginx relaying to the same fake upstream with keep-alive connections to it, as one
# would configure it in front of an app (`master_process off;` is prepended by `nginx_argv`).
NGINX_REFERENCE = r"""
worker_processes 1;
pid        {run}/nginx.pid;
error_log  {run}/error.log warn;
daemon     off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path       {run}/proxy;
    fastcgi_temp_path     {run}/fastcgi;
    uwsgi_temp_path       {run}/uwsgi;
    scgi_temp_path        {run}/scgi;
    upstream fake {{ server {upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location /v1/ {{  # the streams of (2): unbuffered, as deployments relay model streams
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


# --- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """A server process under test: where it listens and its PID (for /proc)."""

    name: str
    port: int
    pid: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def running(
    name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path, probe: str = "/health"
) -> Iterator[Service]:
    """Start a server process (output to `<workdir>/<name>.log`), wait until `probe` answers 200,
    always stop it (by its process id)."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        service = Service(name, port, process.pid)
        wait_ready(service, process, log_path, probe)
        yield service
    finally:
        harness.stop_process(process)


def wait_ready(service: Service, process: subprocess.Popen[bytes], log_path: Path, probe: str) -> None:
    """Poll `probe` until 200; fail with the log's tail if the process exits or never answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.url + probe, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"{service.name} did not start (exit code {process.poll()}):\n{tail}")


def server_env(workdir: Path, name: str, port: int, extra_env: list[str], **settings: str) -> dict[str, str]:
    """A fresh environment for a wardgate-stack process (nothing inherited but `--server-env`
    settings, such as PYTHONPATH=<another tree>/src to measure that tree); its own DATA_DIR."""
    data_dir = workdir / f"data-{name}"
    data_dir.mkdir()
    return {
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
        "GLOBAL_LOG_LEVEL": "WARNING",
        **settings,
        **dict(item.split("=", 1) for item in extra_env),
    }


def nginx_binary() -> str:
    """Debian's nginx (on PATH or in /usr/sbin, where the package puts it)."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("the reference rows need nginx: apt-get install -y nginx")
    return found


def nginx_argv(run: Path, config: str) -> list[str]:
    """nginx in the foreground as one process (`master_process off`, so its pid is the one serving
    and its CPU time is all in /proc/PID/stat), everything it writes under `run`."""
    run.mkdir()
    path = run / "nginx.conf"
    path.write_text("master_process off;\n" + config)
    return [nginx_binary(), "-p", str(run), "-e", str(run / "error.log"), "-c", str(path)]


@contextlib.contextmanager
def running_servers(workdir: Path, extra_env: list[str]) -> Iterator[dict[str, Service]]:
    """Every process of the run, by role: the fake upstream; wardgate in front of it; the references
    (nginx with keep-alive to the same upstream, the raw ASGI app on wardgate's server stack); and
    forward auth (a second wardgate deciding, with a one-site FORWARD_AUTH_FILE, for nginx
    configured as tests/forward_auth/proxies.py and the README document it)."""
    ports = {name: harness.free_port() for name in ("upstream", "wardgate", "nginx", "bare", "decider", "fa")}
    with contextlib.ExitStack() as stack:

        def start(name: str, argv: list[str], env: dict[str, str], probe: str = "/health") -> Service:
            return stack.enter_context(running(name, argv, env, ports[name], workdir, probe))

        upstream = start(
            "upstream", [sys.executable, "-m", "tests.fakes.upstream", str(ports["upstream"])], {}
        )
        access = workdir / "models.toml"  # /openai/stream is no model call: open it to the bench's user
        access.write_text('[management]\nroles = ["user", "admin"]\n')
        proxying = {
            "MODEL_ACCESS_FILE": str(access),
            "UPSTREAM_URL": upstream.url,
            "OPENAI_API_BASE_URL": f"{upstream.url}/v1",
            "OPENAI_API_KEY": f"sk-bench-{secrets.token_hex(8)}",
        }
        wardgate_argv = [sys.executable, "-m", "wardgate", "serve"]
        services = {"upstream": upstream}
        services["wardgate"] = start(
            "wardgate",
            wardgate_argv,
            server_env(workdir, "wardgate", ports["wardgate"], extra_env, **proxying),
        )
        nginx_config = NGINX_REFERENCE.format(
            run=workdir / "nginx", port=ports["nginx"], upstream=upstream.url[7:]
        )
        services["nginx"] = start("nginx", nginx_argv(workdir / "nginx", nginx_config), {})
        bare_env = server_env(workdir, "bare", ports["bare"], extra_env)
        services["bare"] = start("bare", [sys.executable, str(BARE_APP), "--raw"], bare_env)
        rules = workdir / "sites.toml"
        rules.write_text('[[sites]]\nhost = "127.0.0.1"\n')  # the host nginx's X-Original-URL names
        deciding = {
            "FORWARD_AUTH_FILE": str(rules),
            "WEBUI_URL": f"http://127.0.0.1:{ports['decider']}",
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
        }
        decider_env = server_env(workdir, "decider", ports["decider"], extra_env, **deciding)
        services["decider"] = start("decider", wardgate_argv, decider_env)
        run = workdir / "nginx-fa"
        fa_config = proxies.NGINX.format(
            run=run,
            port=ports["fa"],
            wardgate=services["decider"].url[7:],
            app=upstream.url[7:],
            direct="/direct/",
        )
        services["fa"] = start("fa", nginx_argv(run, fa_config), {}, probe="/direct/health")
        yield services


def sign_up(base_url: str) -> str:
    """Create the (admin) benchmark account and return its session token."""
    body = {"name": "Bench", "email": "bench@example.com", "password": secrets.token_urlsafe(18)}
    response = httpx.post(base_url + SIGNUP, json=body, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"sign-up failed: {response.status_code} {response.text[:200]}")
    token: str = response.json()["token"]
    if not _TOKEN_FORM.match(token):
        raise RuntimeError("the session token is not a compact JWT")
    return token


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft descriptor limit (children inherit it) towards `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS, KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the stream client --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a stream request goes; `token` is sent as a Bearer when given."""

    host: str
    port: int
    path: str
    token: str | None

    def request(self, chunks: int, gap: float) -> bytes:
        """The whole HTTP/1.1 request asking the fake for `chunks` SSE events `gap` seconds apart."""
        body = json.dumps({"model": "bench", "stream": True, "chunks": chunks, "gap": gap}).encode()
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Stream:
    """One stream's outcome; times in ms from before connecting (NaN when never reached)."""

    ok: bool
    ttfb_ms: float
    total_ms: float
    error: str = ""


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def stream_once(
    target: Target, chunks: int, gap: float, on_first: Callable[[], None] | None = None
) -> Stream:
    """Request one stream and read it to `data: [DONE]`; errors are returned, never raised."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(chunks * gap * 3 + 60):
            return await _read_stream(target, chunks, gap, started, on_first)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return Stream(False, math.nan, _ms_since(started), type(exc).__name__)


async def _read_stream(
    target: Target, chunks: int, gap: float, started: float, on_first: Callable[[], None] | None
) -> Stream:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(target.request(chunks, gap))
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200 "):
            return Stream(False, math.nan, _ms_since(started), head.split(b"\r\n", 1)[0].decode())
        ttfb, received = math.nan, bytearray()
        while data := await reader.read(65536):
            window = received[-len(DONE) :] + data  # a marker may straddle two reads
            received += data
            if math.isnan(ttfb) and b"data:" in window:
                ttfb = _ms_since(started)
                if on_first:
                    on_first()
            if DONE in window:
                return Stream(True, ttfb, _ms_since(started))
        # Rare: chunked framing split the marker (`data: [D` `\r\n5\r\n` `ONE]`); look again without it.
        ok = DONE in _CHUNK_FRAMING.sub(b"", bytes(received))
        return Stream(ok, ttfb, _ms_since(started), "" if ok else "closed before [DONE]")
    finally:
        writer.close()


@dataclass(frozen=True)
class Batch:
    """Streams run together: their outcomes, the wall time, each server's CPU seconds meanwhile."""

    streams: list[Stream]
    wall_s: float
    cpu_s: dict[str, float]

    @property
    def completed(self) -> int:
        """How many reached `data: [DONE]`."""
        return sum(s.ok for s in self.streams)

    @property
    def errors(self) -> list[str]:
        """What went wrong, one entry per failed stream."""
        return [s.error for s in self.streams if not s.ok]


async def run_batch(
    target: Target, n: int, chunks: int, gap: float, servers: list[Service], probe: RssProbe | None = None
) -> Batch:
    """`n` concurrent streams; the probe (if any) is told of each first chunk and samples meanwhile."""
    cpu_before = {s.name: cpu_seconds(s.pid) for s in servers}
    started = time.perf_counter()
    on_first = probe.opened if probe else None
    tasks = [asyncio.create_task(stream_once(target, chunks, gap, on_first)) for _ in range(n)]
    if probe is not None:
        await probe.measure()
    streams = list(await asyncio.gather(*tasks))
    wall = time.perf_counter() - started
    cpu = {s.name: cpu_seconds(s.pid) - cpu_before[s.name] for s in servers}
    return Batch(streams, wall, cpu)


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when installed (a cheaper client), else asyncio's loop."""
    try:
        import uvloop  # optional: without it, the standard loop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# --- (1) small GET requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One load run: throughput, latency percentiles, counts."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors and timeouts
    cpu_ms: dict[str, float] = field(default_factory=dict)  # each server's CPU ms per request


@dataclass(frozen=True)
class Row:
    """One path of (1): where wrk sends `GET`, with which header, and the processes that serve it
    (the upstream, the process wrk talks to, the one deciding for nginx), for the CPU columns."""

    name: str
    service: str  # the process wrk talks to
    path: str
    header: tuple[str, str]
    upstream: bool = True  # whether the fake upstream answers (its CPU column)
    decider: bool = False  # whether the forward-auth wardgate decides (its CPU column)


def get_rows(token: str, decider_token: str) -> list[Row]:
    """(1)'s rows, in the order each round runs them."""
    bearer = ("Authorization", f"Bearer {token}")
    return [
        Row("direct", "upstream", PROBE, bearer),
        Row("nginx", "nginx", PROBE, bearer),  # the same request bytes, relayed by nginx
        Row("through", "wardgate", PROBE, bearer),
        Row("forward auth", "fa", PROBE, ("Cookie", f"token={decider_token}"), decider=True),
        Row("own", "wardgate", OWN, bearer, upstream=False),
        Row("bare ASGI", "bare", PROBE, bearer, upstream=False),
    ]


Loader = Callable[[str, Row, int], Load]
"""(url, row, seconds) -> Load."""


def wrk_load(url: str, script: Path, connections: int, duration: int) -> Load:
    """`wrk -t1 --latency` with a Lua script that adds the row's header (the credential)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    done = subprocess.run(
        [*command, "-s", str(script), url], capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    r = harness.parse_wrk(done.stdout)
    return Load(r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors)


async def python_load(url: str, header: tuple[str, str], connections: int, duration: int) -> Load:
    """The fallback without wrk (see harness.python_load)."""
    r = await harness.python_load(url, dict([header]), duration, connections)
    return Load(r.requests_per_s, r.p50_ms, r.p99_ms, r.requests, r.errors)


def load_generator(args: argparse.Namespace, workdir: Path) -> Loader:
    """wrk (a Lua script per credential, 0600 in the temporary directory) or the Python fallback."""
    if args.python_load or shutil.which("wrk") is None:
        print("(1) uses the Python load generator (wrk not installed, or --python-load): slower, noisier")

        def python(url: str, row: Row, seconds: int) -> Load:
            return run_async(python_load(url, row.header, args.connections, seconds))  # type: ignore[no-any-return]

        return python
    scripts: dict[tuple[str, str], Path] = {}

    def wrk(url: str, row: Row, seconds: int) -> Load:
        if row.header not in scripts:
            script = workdir / f"header-{len(scripts)}.lua"
            script.write_text(f'wrk.headers["{row.header[0]}"] = "{row.header[1]}"\n')
            script.chmod(0o600)
            scripts[row.header] = script
        return wrk_load(url, scripts[row.header], args.connections, seconds)

    return wrk


def get_scenario(
    args: argparse.Namespace, load: Loader, rows: list[Row], services: dict[str, Service]
) -> list[dict[str, Load]]:
    """(1): the rows one after the other, `rounds` times; each round's loads by row name.

    Only one server path is loaded at a time. Each server's CPU time per request is measured too:
    unlike requests/s it barely moves when neighbours take the cores, so it shows each process's
    own cost most reliably.
    """
    for row in rows:
        load(services[row.service].url + row.path, row, 1)  # warm-up, not reported
    rounds = []
    for _ in range(args.rounds):
        loads = {}
        for row in rows:
            before = {name: cpu_seconds(s.pid) for name, s in services.items()}
            result = load(services[row.service].url + row.path, row, args.duration)
            spent = {name: (cpu_seconds(s.pid) - before[name]) * 1000 for name, s in services.items()}
            per_request = {k: v / max(1, result.requests) for k, v in spent.items()}
            loads[row.name] = replace(result, cpu_ms=per_request)
        rounds.append(loads)
    return rounds


def median_loads(rounds: list[dict[str, Load]]) -> dict[str, Load]:
    """Per row, the median of each metric over the rounds (counts summed)."""
    return {name: _median_load([r[name] for r in rounds]) for name in rounds[0]}


def _median_load(loads: list[Load]) -> Load:
    return Load(
        statistics.median(x.requests_per_s for x in loads),
        statistics.median(x.p50_ms for x in loads),
        statistics.median(x.p99_ms for x in loads),
        sum(x.requests for x in loads),
        sum(x.errors for x in loads),
        {k: statistics.median(x.cpu_ms[k] for x in loads) for k in loads[0].cpu_ms},
    )


def get_ratios(loads: dict[str, Load]) -> dict[str, float]:
    """The ratios of (1) that have goals (see GOALS), then the informative ones."""
    through, nginx, fa = loads["through"], loads["nginx"], loads["forward auth"]
    direct, bare = loads["direct"], loads["bare ASGI"]
    return {
        "req/s through/nginx": through.requests_per_s / nginx.requests_per_s,
        "p99 through/nginx": through.p99_ms / nginx.p99_ms,
        "CPU/req wardgate/upstream": through.cpu_ms["wardgate"] / through.cpu_ms["upstream"],
        "req/s through/direct": through.requests_per_s / direct.requests_per_s,
        "req/s forward auth/nginx": fa.requests_per_s / nginx.requests_per_s,
        "p99 forward auth/nginx": fa.p99_ms / nginx.p99_ms,
        "req/s through/forward auth": through.requests_per_s / fa.requests_per_s,
        "req/s nginx/direct": nginx.requests_per_s / direct.requests_per_s,
        "req/s through/bare ASGI": through.requests_per_s / bare.requests_per_s,
        "req/s own/nginx": loads["own"].requests_per_s / nginx.requests_per_s,
        "CPU/req wardgate/nginx": through.cpu_ms["wardgate"] / nginx.cpu_ms["nginx"],
        "CPU/req forward auth (nginx+decider)/nginx": (fa.cpu_ms["fa"] + fa.cpu_ms["decider"])
        / nginx.cpu_ms["nginx"],
    }


# --- (2), (3), (4) streams ----------------------------------------------------------------------


async def first_byte_scenario(
    args: argparse.Namespace, targets: dict[str, Target], runs_each: int
) -> dict[str, list[Stream]]:
    """(2): one stream at a time, the paths in turn (also the warm-up, unreported). The order turns
    by one each run, so that each path follows each other path as often: a stream right after a
    flood of the upstream's own starts later (measured: 1.5-2.5 ms against 0.95 ms)."""
    runs: dict[str, list[Stream]] = {name: [] for name in targets}
    order = list(targets)
    for turn in range(runs_each):
        for name in order[turn % len(order) :] + order[: turn % len(order)]:
            runs[name].append(await stream_once(targets[name], args.sse_chunks, args.sse_gap))
    return runs


async def concurrency_scenario(
    args: argparse.Namespace, targets: dict[str, Target], servers: list[Service]
) -> dict[tuple[int, str], Batch]:
    """(3): each concurrency level, direct then through."""
    results = {}
    for n in args.levels:
        for name, target in targets.items():
            results[n, name] = await run_batch(target, n, args.conc_chunks, args.conc_gap, servers)
    return results


class RssProbe:
    """Counts streams whose first chunk arrived; once all have (or time is up), samples VmRSS."""

    def __init__(self, pid: int, n: int, wait_s: float) -> None:
        self.pid, self.n, self.wait_s = pid, n, wait_s
        self.open = 0
        self.opened_at_sample = 0
        self._all_open = asyncio.Event()
        self.before_kib = rss_kib(pid)
        self.held_kib = 0

    def opened(self) -> None:
        """Called by each stream at its first chunk."""
        self.open += 1
        if self.open >= self.n:
            self._all_open.set()

    async def measure(self) -> None:
        """Wait until every stream is open, then take the median of three samples 0.2 s apart."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_open.wait(), self.wait_s)
        self.opened_at_sample = self.open
        samples = []
        for _ in range(3):
            samples.append(rss_kib(self.pid))
            await asyncio.sleep(0.2)
        self.held_kib = int(statistics.median(samples))

    @property
    def per_stream_kib(self) -> float:
        """(RSS while held - RSS before) / streams open when sampled."""
        return (
            (self.held_kib - self.before_kib) / self.opened_at_sample if self.opened_at_sample else math.nan
        )


async def held_scenario(
    args: argparse.Namespace, targets: dict[str, Target], measured: dict[str, Service], servers: list[Service]
) -> dict[str, tuple[Batch, RssProbe]]:
    """(4): `held` streams at once, direct then through (the direct run never touches wardgate)."""
    results = {}
    for name in ("direct", "through"):
        probe = RssProbe(measured[name].pid, args.held, wait_s=args.held_chunks * args.held_gap)
        batch = await run_batch(targets[name], args.held, args.held_chunks, args.held_gap, servers, probe)
        results[name] = (batch, probe)
        await asyncio.sleep(1.0)  # let both servers settle before the next run
    return results


# --- the report ---------------------------------------------------------------------------------


def _p50(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return statistics.median(real) if real else math.nan


def _errors(errors: list[str]) -> str:
    return f"{len(errors)} ({', '.join(sorted(set(errors))[:2])})" if errors else "0"


def gets_table(
    rounds: list[dict[str, Load]], rows: list[Row], args: argparse.Namespace, generator: str
) -> None:
    """Table (1), medians over the rounds; CPU ms per request of each process serving the row."""
    loads = median_loads(rounds)
    title = f"(1) GET {PROBE}, small JSON: {generator}, {args.connections} connections, "
    title += f"{args.duration} s x {args.rounds} rounds (medians)"
    headers = ["path", "req/s", "p50 ms", "p99 ms", "requests", "errors"]
    headers += ["CPU ms/req upstream", "front", "decider"]
    harness.print_table(title, headers, [_load_row(row, loads[row.name]) for row in rows])
    print("    front: the process wrk talks to (nginx, wardgate, the bare ASGI app); decider: the")
    print("    forward-auth wardgate nginx asks (auth_request) before relaying to the upstream")
    print(f"    own: GET {OWN} on wardgate, one of its own routes with authentication, no upstream")
    print("    bare ASGI: a raw ASGI callable on wardgate's server.run() (bench/bare_app.py --raw)")


def _load_row(row: Row, x: Load) -> list[str]:
    def cpu(name: str | None) -> str:
        return "-" if name is None else f"{x.cpu_ms[name]:.3f}"

    front = None if row.service == "upstream" else row.service
    cells = [cpu("upstream" if row.upstream else None), cpu(front), cpu("decider" if row.decider else None)]
    counts = [str(x.requests), str(x.errors)]
    return [row.name, f"{x.requests_per_s:.0f}", f"{x.p50_ms:.2f}", f"{x.p99_ms:.2f}", *counts, *cells]


def ratios_table(rounds: list[dict[str, Load]]) -> None:
    """(1)'s ratios: of the medians, and of each round (both paths measured back to back)."""
    overall = get_ratios(median_loads(rounds))
    per_round = [get_ratios(r) for r in rounds]
    headers = [
        "ratio",
        "medians",
        *(f"round {i + 1}" for i in range(len(rounds))),
        "min-max",
        "goal",
        "verdict",
    ]
    table = []
    for name, value in overall.items():
        values = [r[name] for r in per_round]
        goal = GOALS.get(name)
        verdict = "info" if goal is None else _verdict(_meets(value, goal))
        spread = f"{min(values):.2f}-{max(values):.2f}"
        goal_text = "-" if goal is None else f"{goal[0]} {goal[1]:g}"
        table.append([name, f"{value:.2f}", *(f"{v:.2f}" for v in values), spread, goal_text, verdict])
    harness.print_table("(1) ratios: medians of the rounds, and each round's own", headers, table)


def _meets(value: float, goal: tuple[str, float]) -> bool:
    comparison, bound = goal
    return {">=": value >= bound, "<=": value <= bound, "<": value < bound}[comparison]


def first_bytes_table(runs: dict[str, list[Stream]], args: argparse.Namespace) -> None:
    """Table (2)."""
    title = f"(2) one SSE stream of {args.sse_chunks} chunks, gap {args.sse_gap * 1000:g} ms, "
    title += f"{args.runs} runs per path (p50)"
    rows = []
    for name, streams in runs.items():
        ttfbs = [s.ttfb_ms for s in streams if s.ok]
        spread = f"{min(ttfbs):.2f}-{max(ttfbs):.2f}" if ttfbs else "-"
        total = _p50([s.total_ms for s in streams if s.ok])
        rows.append([name, f"{_p50(ttfbs):.2f}", spread, f"{total:.1f}", _errors(_failed(streams))])
    harness.print_table(title, ["path", "TTFB ms", "TTFB min-max", "total ms", "errors"], rows)


def _failed(streams: list[Stream]) -> list[str]:
    return [s.error for s in streams if not s.ok]


def batches_table(results: dict[tuple[int, str], Batch], args: argparse.Namespace) -> None:
    """Table (3)."""
    title = f"(3) concurrent SSE streams, {args.conc_chunks} chunks x {args.conc_gap * 1000:g} ms each"
    headers = [
        "streams/path",
        "completed",
        "errors",
        "wall s",
        "TTFB p50 ms",
        "CPU s upstream",
        "CPU s wardgate",
    ]
    rows = [
        [
            f"{n} {name}",
            f"{b.completed}/{n}",
            _errors(b.errors),
            f"{b.wall_s:.2f}",
            f"{_p50([s.ttfb_ms for s in b.streams]):.2f}",
            f"{b.cpu_s['upstream']:.2f}",
            f"{b.cpu_s['wardgate']:.2f}",
        ]
        for (n, name), b in results.items()
    ]
    harness.print_table(title, headers, rows)


def held_table(results: dict[str, tuple[Batch, RssProbe]], args: argparse.Namespace) -> None:
    """Table (4); the RSS is wardgate's through it and the fake upstream's directly."""
    title = (
        f"(4) {args.held} SSE streams held at once, {args.held_chunks} chunks x {args.held_gap * 1000:g} ms"
    )
    headers = ["path", "completed", "errors", "wall s", "TTFB p50 s", "open at sample", "RSS of"]
    headers += ["before MiB", "held MiB", "KiB/stream", "CPU s upstream", "CPU s wardgate"]
    rows = [
        [
            name,
            f"{b.completed}/{args.held}",
            _errors(b.errors),
            f"{b.wall_s:.2f}",
            f"{_p50([s.ttfb_ms for s in b.streams]) / 1000:.2f}",
            str(p.opened_at_sample),
            "wardgate" if name == "through" else "upstream",
            f"{p.before_kib / 1024:.1f}",
            f"{p.held_kib / 1024:.1f}",
            f"{p.per_stream_kib:.1f}",
            f"{b.cpu_s['upstream']:.2f}",
            f"{b.cpu_s['wardgate']:.2f}",
        ]
        for name, (b, p) in results.items()
    ]
    harness.print_table(title, headers, rows)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _stream_goal_rows(
    first: dict[str, list[Stream]], batches: dict[tuple[int, str], Batch], held: tuple[Batch, RssProbe]
) -> list[list[str]]:
    ttfb = {name: _p50([s.ttfb_ms for s in streams]) for name, streams in first.items()}
    total = {name: _p50([s.total_ms for s in streams]) for name, streams in first.items()}
    added = ttfb["through"] - ttfb["direct"]
    conc_ok = all(not b.errors for b in batches.values())
    levels = sorted({n for n, _path in batches})
    walls = ", ".join(
        f"{n}: {batches[n, 'through'].wall_s / batches[n, 'direct'].wall_s:.2f}" for n in levels
    )
    through, probe = held
    return [
        [
            "(2) added TTFB p50",
            f"{added:.2f} ms",
            f"< {GOAL_ADDED_TTFB_MS} ms",
            _verdict(added < GOAL_ADDED_TTFB_MS),
        ],
        ["(2) added TTFB p50, nginx", f"{ttfb['nginx'] - ttfb['direct']:.2f} ms", "-", "info"],
        ["(2) total time through/direct", f"{total['through'] / total['direct']:.2f}", "-", "info"],
        *(
            [
                f"(2) {what} metered/unmetered",
                f"{value['through'] / value['unmetered']:.3f}",
                f"<= {GOAL_METERING}",
                _verdict(value["through"] / value["unmetered"] <= GOAL_METERING),
            ]
            for what, value in (("TTFB p50", ttfb), ("total time", total))
        ),
        ["(3) all streams complete", "yes" if conc_ok else "NO", "no errors", _verdict(conc_ok)],
        ["(3) wall through/direct", walls, "-", "info"],
        [
            f"(4) {len(through.streams)} held, through",
            f"{through.completed} done",
            "no errors",
            _verdict(not through.errors),
        ],
        ["(4) wardgate RSS per open stream", f"{probe.per_stream_kib:.1f} KiB", "-", "info"],
    ]


def goals_table(
    rounds: list[dict[str, Load]],
    first: dict[str, list[Stream]],
    batches: dict[tuple[int, str], Batch],
    held: dict[str, tuple[Batch, RssProbe]],
) -> None:
    """The ratios against the goals, with PASS/MISS ("info" rows have no goal)."""
    ratios = get_ratios(median_loads(rounds))
    rows = [
        [
            f"(1) {name}",
            f"{ratios[name]:.2f}",
            f"{comparison} {bound:g}",
            _verdict(_meets(ratios[name], goal)),
        ]
        for name, goal in GOALS.items()
        for comparison, bound in [goal]
    ]
    rows += _stream_goal_rows(first, batches, held["through"])
    harness.print_table("goals", ["measure", "value", "goal", "verdict"], rows)


# --- the run ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (defaults keep the whole run around a minute and a half)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--duration", type=int, default=5, help="(1) seconds per load run (default 5)")
    add("--rounds", type=int, default=2, help="(1) direct/through rounds, medians reported (default 2)")
    add("--connections", type=int, default=32, help="(1) concurrent connections (default 32)")
    add("--python-load", action="store_true", help="(1) use the Python generator even if wrk exists")
    add("--runs", type=int, default=20, help="(2) streams per path (default 20)")
    add("--sse-chunks", type=int, default=1000, help="(2) chunks per stream (default 1000)")
    add("--sse-gap", type=float, default=0.0, help="(2) seconds between chunks (default 0)")
    add("--levels", type=int, nargs="+", default=[1, 32, 256], help="(3) concurrency levels")
    add("--conc-chunks", type=int, default=50, help="(3) chunks per stream (default 50)")
    add("--conc-gap", type=float, default=0.02, help="(3) seconds between chunks (default 0.02)")
    add("--held", type=int, default=1000, help="(4) streams held at once (default 1000)")
    add("--held-chunks", type=int, default=20, help="(4) chunks per stream (default 20)")
    add("--held-gap", type=float, default=0.5, help="(4) seconds between chunks (default 0.5)")
    add("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra wardgate setting")
    args = parser.parse_args(argv)
    if any("=" not in item or not item.partition("=")[0] for item in args.server_env):
        parser.error("--server-env expects KEY=VALUE")
    if min(args.duration, args.rounds, args.connections, args.runs, args.held, *args.levels) < 1:
        parser.error("counts and durations must be positive")
    return args


def check_paths(rows: list[Row], services: dict[str, Service]) -> None:
    """Every path answers 200 before anything is measured (a 401 would make every number meaningless)."""
    for row in rows:
        url = services[row.service].url + row.path
        status = httpx.get(url, headers=dict([row.header]), timeout=10).status_code
        if status != 200:
            raise RuntimeError(f"GET {url} ({row.name}) answered {status}, not 200")


def measure(args: argparse.Namespace, workdir: Path, services: dict[str, Service]) -> None:
    """Run (4), (1), (2), (3) against the running servers and print the tables and the goals."""
    upstream, wardgate = services["upstream"], services["wardgate"]
    token = sign_up(wardgate.url)
    rows = get_rows(token, decider_token=sign_up(services["decider"].url))
    check_paths(rows, services)
    targets = {
        "direct": Target(upstream.host, upstream.port, CHAT_DIRECT, token),  # same request bytes
        "through": Target(wardgate.host, wardgate.port, CHAT_THROUGH, token),
    }
    servers = [upstream, wardgate]
    measured = {"direct": upstream, "through": wardgate}
    run_async(first_byte_scenario(args, targets, runs_each=3))  # warm-up, not reported
    held = run_async(held_scenario(args, targets, measured, servers))
    rounds = get_scenario(args, load_generator(args, workdir), rows, services)
    unmetered = Target(wardgate.host, wardgate.port, CHAT_UNMETERED, token)
    nginx = Target(services["nginx"].host, services["nginx"].port, CHAT_DIRECT, token)  # the reference
    first = run_async(
        first_byte_scenario(args, {**targets, "unmetered": unmetered, "nginx": nginx}, args.runs)
    )
    batches = run_async(concurrency_scenario(args, targets, servers))
    generator = "wrk -t1" if shutil.which("wrk") and not args.python_load else "asyncio+httpx"
    pids = ", ".join(f"{name} {s.pid}" for name, s in services.items())
    print(f"pids: {pids}; {len(os.sched_getaffinity(0))} cores")
    gets_table(rounds, rows, args, generator)
    ratios_table(rounds)
    first_bytes_table(first, args)
    batches_table(batches, args)
    held_table(held, args)
    goals_table(rounds, first, batches, held)


def main(argv: list[str] | None = None) -> int:
    """Start the fake upstream and wardgate, measure, stop both, report."""
    args = parse_args(argv)
    limit = raise_fd_limit(4 * args.held + 1024)
    if limit < 2 * args.held + 256:
        print(f"WARNING: the descriptor limit is {limit}; {args.held} held streams may fail (ulimit -n)")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="wardgate-bench-proxy-") as tmp,
        running_servers(Path(tmp), args.server_env) as services,
    ):
        measure(args, Path(tmp), services)
    print(f"\ntotal run time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
