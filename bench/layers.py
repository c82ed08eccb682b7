"""Where the time of an authenticated `GET /api/v1/auths/` goes: each middleware layer, FastAPI, the route.

wardgate is built in this process (temporary DATA_DIR, SQLite, default settings) and wrapped in
variants of its middleware stack, each with one layer left out (the same order as
`wardgate.http.application.build_application`, rebuilt here so a layer can be skipped), plus routes
that take FastAPI's work apart: dependency injection, the response model, the JSON encoding.

Mode `inprocess` (default) calls each variant's ASGI callable directly, with no server and no
socket, many times over, the variants interleaved in rounds; it prints the median µs per request and
each variant's difference from the full stack (what the left-out layer costs). Mode `wrk` serves
each variant with wardgate's own `server.run()` (same protocol class and uvicorn options) in its own
process and loads them one after the other with `wrk -t1`, side by side in one run.

    .venv/bin/python bench/layers.py [--requests 3000] [--rounds 7]
    .venv/bin/python bench/layers.py --mode wrk [--duration 5] [--connections 32] [--variants full,bare]
    .venv/bin/python bench/layers.py --profile full   # cProfile of in-process requests, top entries

One file on purpose (like auth_overhead.py): a hand-run benchmark is easier to read whole.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import harness
import httpx
from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wardgate.config import load_settings
from wardgate.config.loading import read_environment
from wardgate.gateway import Gateway
from wardgate.http import server
from wardgate.http.application import LOGIN_PATHS, build_routes
from wardgate.http.deps import CurrentUser, authenticate
from wardgate.http.middleware.audit_context import AuditContextMiddleware
from wardgate.http.middleware.cors import CORSGuardMiddleware
from wardgate.http.middleware.csrf import CSRFMiddleware
from wardgate.http.middleware.security_headers import SecurityHeadersMiddleware
from wardgate.http.middleware.size_limits import BodySizeLimitMiddleware, HeaderSizeLimitMiddleware
from wardgate.http.middleware.trusted_proxy import TrustedProxyMiddleware
from wardgate.http.relay.dispatch import UpstreamDispatch
from wardgate.http.routes import auth
from wardgate.http.routes.auth import session_user
from wardgate.http.schemas import SessionUser
from wardgate.identity.authentication import TOKEN_COOKIE
from wardgate.security.headers import build_header_policy

SESSION_USER = "/api/v1/auths/"
LAYERS = ("trusted-proxy", "audit-context", "security-headers", "header-size", "cors", "csrf", "body-size")
CONSTANT = {"status": True, "name": "bare", "detail": "a constant JSON body"}
# What a browser-less API client sends (wrk sends Host only, plus the Authorization header).
BASE_HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*")]


# --- the variants -------------------------------------------------------------------------------


def wrap(gateway: Gateway, routes: FastAPI, skip: frozenset[str] = frozenset()) -> ASGIApp:
    """`build_application`'s stack around `routes`, leaving out the layers named in `skip`."""
    s = gateway.settings
    app: ASGIApp = routes if "dispatch" in skip else UpstreamDispatch(routes)
    if "body-size" not in skip:
        app = BodySizeLimitMiddleware(app, s.max_body_size)
    if "csrf" not in skip:
        app = CSRFMiddleware(
            app,
            site_origin=s.site_origin,
            trusted_origins=s.cors_allow_origin,
            cookie_name=TOKEN_COOKIE,
            login_paths=[f"{s.route_prefix}{path}" for path in LOGIN_PATHS],
            api_key_header=s.custom_api_key_header,
        )
    if "cors" not in skip:
        app = CORSGuardMiddleware(app, s.cors_allow_origin)
    if "header-size" not in skip:
        app = HeaderSizeLimitMiddleware(app, s.max_header_size)
    if "security-headers" not in skip:
        policy = build_header_policy(s.security_headers)
        app = SecurityHeadersMiddleware(app, policy, enforce_on_proxied=s.proxy_enforce_security_headers)
    if "audit-context" not in skip:
        app = AuditContextMiddleware(app)
    if "trusted-proxy" not in skip:
        app = TrustedProxyMiddleware(app, s.forwarded_allow_ips)
    return app


def probe_app(routes: FastAPI, *, serving: bool = False) -> FastAPI:
    """A small FastAPI app sharing wardgate's services, with routes that take the session-user route
    apart step by step (few routes, so routing costs next to nothing here), and the real auth router.
    `serving`: the app is served alone, so its lifespan starts and stops wardgate's services."""
    gateway: Gateway = routes.state.gateway

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    probes = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan if serving else None)
    probes.state.gateway = routes.state.gateway
    probes.state.site = routes.state.site
    probes.state.owned_paths = routes.state.owned_paths  # UpstreamDispatch's view of "ours"
    add_probe_routes(probes)
    probes.include_router(auth.router)  # the real GET /api/v1/auths/, first of its ~15 routes
    return probes


def add_probe_routes(routes: FastAPI) -> None:
    """The probe routes (see `probe_app`)."""

    @routes.get("/probe/dict", response_model=None)
    async def probe_dict() -> dict[str, object]:
        return CONSTANT  # routing + FastAPI's endpoint machinery + jsonable_encoder + JSONResponse

    @routes.get("/probe/model", response_model=SessionUser)
    async def probe_model() -> SessionUser:
        return SAMPLE  # + the response model's validation and serialisation

    @routes.get("/probe/auth-dict", response_model=None)
    async def probe_auth_dict(principal: CurrentUser) -> dict[str, object]:
        return CONSTANT  # + the authentication dependency (DI, JWT cache, revocation view)

    @routes.get("/probe/auth-model", response_model=SessionUser)
    async def probe_auth_model(principal: CurrentUser, response: Response) -> SessionUser:
        response.headers["Cache-Control"] = "no-store"  # the real route, under another path
        token = principal.token if principal.via == "header" else ""
        return session_user(principal.user, token, principal.claims.expires_at)

    @routes.get("/probe/auth-direct", response_model=None)
    async def probe_auth_direct(request: Request) -> Response:
        # What the real route could be: no dependency, no response model, the body dumped once.
        principal = await authenticate(request)
        token = principal.token if principal.via == "header" else ""
        body = session_user(principal.user, token, principal.claims.expires_at).model_dump_json()
        return Response(body, media_type="application/json", headers={"Cache-Control": "no-store"})


SAMPLE = SessionUser(
    token="",
    expires_at=None,
    id="0" * 36,
    email="a@example.com",
    name="A",
    role="admin",
    profile_image_url="",
)


def bare_app() -> FastAPI:
    """A bare FastAPI app: one async route, a constant dict (as bench/bare_app.py)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/bare", response_model=None)
    async def bare() -> dict[str, object]:
        return CONSTANT

    return app


async def raw_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """No framework at all: the server's floor."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = b'{"status":true,"name":"bare","detail":"a constant JSON body"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def variants(
    gateway: Gateway, routes: FastAPI, *, serving: bool = False
) -> dict[str, tuple[ASGIApp, str, bool]]:
    """name -> (ASGI app, path, sends the token)."""
    full = wrap(gateway, routes)
    found: dict[str, tuple[ASGIApp, str, bool]] = {
        "raw ASGI (no framework)": (raw_asgi, "/", False),
        "bare FastAPI /bare": (bare_app(), "/bare", False),
        "full /api/v1/auths/": (full, SESSION_USER, True),
    }
    for layer in LAYERS:
        found[f"full - {layer}"] = (wrap(gateway, routes, frozenset({layer})), SESSION_USER, True)
    found["full - dispatch"] = (wrap(gateway, routes, frozenset({"dispatch"})), SESSION_USER, True)
    found["no middleware at all"] = (routes, SESSION_USER, True)
    found["full /health"] = (full, "/health", False)
    probes = probe_app(routes, serving=serving)
    found["small app /api/v1/auths/"] = (probes, SESSION_USER, True)
    for probe in ("dict", "model", "auth-dict", "auth-model", "auth-direct"):
        found[f"small app /probe/{probe}"] = (probes, f"/probe/{probe}", probe.startswith("auth"))
    found["small app + full stack /api/v1/auths/"] = (wrap(gateway, probes), SESSION_USER, True)
    return found


# --- wardgate in this process -------------------------------------------------------------------


@contextlib.contextmanager
def wardgate_here(data_dir: Path) -> Iterator[tuple[Gateway, FastAPI, asyncio.AbstractEventLoop]]:
    """wardgate's services and routes, started (lifespan) on a loop of this thread."""
    env = {
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
        "GLOBAL_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(read_environment(env, env_file=None))
    gateway = Gateway.build(settings)
    routes = build_routes(gateway)
    loop = asyncio.new_event_loop()
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def start() -> asyncio.Task[None]:
        await inbox.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        task = asyncio.create_task(routes(scope, inbox.get, outbox.put))
        message = await outbox.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"wardgate did not start: {message}")
        return task

    task = loop.run_until_complete(start())
    try:
        yield gateway, routes, loop
    finally:

        async def stop() -> None:
            await inbox.put({"type": "lifespan.shutdown"})
            await outbox.get()
            await task

        loop.run_until_complete(stop())
        loop.close()


def request_scope(path: str, token: str | None, method: str = "GET") -> Scope:
    """An HTTP scope as uvicorn builds it."""
    headers = list(BASE_HEADERS)
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "state": {},
    }


async def call(app: ASGIApp, scope: Scope, body: bytes = b"") -> tuple[int, bytes]:
    """One request through `app`; (status, body)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(dict(scope, state={}, headers=list(scope["headers"])), receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def sign_up(app: ASGIApp) -> str:
    """The first account (admin) and its token, through the real sign-up route."""
    body = (
        b'{"name":"Bench","email":"bench@example.com","password":"'
        + secrets.token_urlsafe(18).encode()
        + b'"}'
    )
    scope = request_scope("/api/v1/auths/signup", None, "POST")
    scope["headers"] += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    status, answer = await call(app, scope, body)
    if status != 200:
        raise RuntimeError(f"sign-up failed: {status} {answer[:200]!r}")
    token: str = json.loads(answer)["token"]
    return token


async def time_requests(app: ASGIApp, scope: Scope, n: int) -> float:
    """CPU µs of this thread per request over `n` sequential requests (each checked for 200).

    Thread CPU time, not wall time: on a shared machine the time other processes (and this one's
    own worker threads) run is left out, which makes the differences between variants readable."""
    started = time.thread_time()
    for _ in range(n):
        status, _ = await call(app, scope)
        if status != 200:
            raise RuntimeError(f"{scope['path']} answered {status}")
    return (time.thread_time() - started) / n * 1e6


def run_inprocess(args: argparse.Namespace) -> None:
    """Median µs per request of every variant, interleaved over rounds."""
    with tempfile.TemporaryDirectory(prefix="wardgate-layers-") as tmp, wardgate_here(Path(tmp)) as here:
        gateway, routes, loop = here
        table = variants(gateway, routes)
        token = loop.run_until_complete(sign_up(table["full /api/v1/auths/"][0]))
        scopes = {
            name: request_scope(path, token if auth else None) for name, (_, path, auth) in table.items()
        }
        for name, (app, _, _) in table.items():  # warm-up: first requests build FastAPI's caches
            loop.run_until_complete(time_requests(app, scopes[name], 200))
        samples: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.rounds):
            for name, (app, _, _) in table.items():
                samples[name].append(loop.run_until_complete(time_requests(app, scopes[name], args.requests)))
        print(f"in-process, no server: {args.requests} requests x {args.rounds} rounds per variant")
        print("thread CPU µs per request: median and min over the rounds; 'vs full' compares medians")
        full = statistics.median(samples["full /api/v1/auths/"])
        print(f"{'variant':<40} {'median':>7} {'min':>7} {'vs full':>8}")
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"{name:<40} {median:7.1f} {min(values):7.1f} {median - full:+8.1f}")


def run_profile(args: argparse.Namespace) -> None:
    """cProfile of in-process requests to one variant."""
    with tempfile.TemporaryDirectory(prefix="wardgate-layers-") as tmp, wardgate_here(Path(tmp)) as here:
        gateway, routes, loop = here
        table = variants(gateway, routes)
        token = loop.run_until_complete(sign_up(table["full /api/v1/auths/"][0]))
        app, path, auth = table[args.profile]
        scope = request_scope(path, token if auth else None)
        loop.run_until_complete(time_requests(app, scope, 500))
        profile = cProfile.Profile()
        profile.enable()
        loop.run_until_complete(time_requests(app, scope, args.requests))
        profile.disable()
        stats = pstats.Stats(profile)
        print(f"cProfile of {args.requests} in-process requests to {args.profile!r}")
        stats.sort_stats("tottime").print_stats(30)


# --- served, under wrk ------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """Serve one variant with wardgate's server (child process of --mode wrk); its lifespan starts
    wardgate's services (every wardgate variant passes the lifespan scope through to the routes)."""
    settings = load_settings(read_environment(dict(os.environ), env_file=None))
    gateway = Gateway.build(settings)
    routes = build_routes(gateway)
    app = variants(gateway, routes, serving=True)[args.serve][0]
    server.run(app, settings, host="127.0.0.1", port=args.port, certfile=None, keyfile=None)


def run_wrk(args: argparse.Namespace) -> None:
    """Each chosen variant in its own server process, loaded one after the other with wrk -t1."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    names = [n.strip() for n in args.variants.split(";")] if args.variants else WRK_DEFAULT
    results: dict[str, list[harness.WrkResult]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="wardgate-layers-") as tmp, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(served(Path(tmp), i, name)) for i, name in enumerate(names)]
        for _ in range(args.rounds_wrk):
            for name, (url, script) in zip(names, servers, strict=True):
                results[name].append(wrk(url, script, args))
    floor = statistics.median(r.requests_per_s for r in results[names[0]])
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds_wrk} round(s), medians")
    print(
        f"{'variant':<34} {'req/s':>8} {'µs/req':>8} {'p50 ms':>7} {'p99 ms':>7} {'vs 1st':>6} {'errors':>6}"
    )
    for name, rs in results.items():
        rps = statistics.median(r.requests_per_s for r in rs)
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        errors = sum(r.errors for r in rs)
        print(f"{name:<34} {rps:8.0f} {1e6 / rps:8.1f} {p50:7.2f} {p99:7.2f} {rps / floor:6.2f} {errors:6}")


WRK_DEFAULT = [
    "bare FastAPI /bare",
    "raw ASGI (no framework)",
    "full /api/v1/auths/",
    "no middleware at all",
    "small app /api/v1/auths/",
    "small app /probe/auth-direct",
]


@contextlib.contextmanager
def served(tmp: Path, index: int, name: str) -> Iterator[tuple[str, Path | None]]:
    """A `--serve name` child on a free port; (url, wrk Lua script or None)."""
    port = harness.free_port()
    data_dir = tmp / str(index)
    data_dir.mkdir()
    env = {
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": secrets.token_urlsafe(48),
        "GLOBAL_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, __file__, "--serve", name, "--port", str(port)]
    with (data_dir / "log").open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{(data_dir / 'log').read_text()[-2000:]}")
            time.sleep(0.1)
        script = None
        if _AUTH.get(name, True):
            body = {"name": "Bench", "email": "bench@example.com", "password": secrets.token_urlsafe(18)}
            answer = httpx.post(f"http://127.0.0.1:{port}/api/v1/auths/signup", json=body, timeout=30)
            answer.raise_for_status()
            script = data_dir / "bearer.lua"
            script.write_text(f'wrk.headers["Authorization"] = "Bearer {answer.json()["token"]}"\n')
        yield f"http://127.0.0.1:{port}{_path(name)}", script
    finally:
        harness.stop_process(process)


_AUTH = {"raw ASGI (no framework)": False, "bare FastAPI /bare": False, "full /health": False}
_AUTH |= {f"small app /probe/{probe}": probe.startswith("auth") for probe in ("dict", "model")}


def _path(name: str) -> str:
    return {"raw ASGI (no framework)": "/", "bare FastAPI /bare": "/bare"}.get(name) or (
        "/" + name.split(" /", 1)[1] if " /" in name else SESSION_USER
    )


def _listening(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        return True
    return False


def wrk(url: str, script: Path | None, args: argparse.Namespace) -> harness.WrkResult:
    """One wrk -t1 run."""
    command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    done = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=args.duration + 60, check=True
    )
    return harness.parse_wrk(done.stdout)


# --- the command line ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the chosen mode."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("inprocess", "wrk"), default="inprocess")
    parser.add_argument("--requests", type=int, default=300, help="in-process requests per variant and round")
    parser.add_argument("--rounds", type=int, default=30, help="in-process rounds (variants interleaved)")
    parser.add_argument("--profile", metavar="VARIANT", help="cProfile one in-process variant instead")
    parser.add_argument("--variants", help="--mode wrk: variant names separated by ';' (first = the floor)")
    parser.add_argument("--duration", type=int, default=5, help="--mode wrk: seconds per run")
    parser.add_argument("--connections", type=int, default=32, help="--mode wrk: connections")
    parser.add_argument("--rounds-wrk", type=int, default=1, help="--mode wrk: rounds (medians)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
    elif args.profile:
        run_profile(args)
    elif args.mode == "wrk":
        run_wrk(args)
    else:
        run_inprocess(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
