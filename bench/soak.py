"""A bounded soak: honest clients keep their latency while hostile ones try to stall wardgate.

One run starts the fake upstream and one `wardgate serve` with default limits (bench/proxy.py's
`running_pair`), signs up an account, then measures the honest clients twice at the same offered load:

- quiet: the honest clients alone, `--quiet` seconds;
- soak: the same honest clients while a separate process (so that its work does not slow the
  measuring loop) runs every hostile client at once, `--duration` seconds.

Honest clients come from 127.0.0.1 (the trusted proxy) naming themselves in X-Forwarded-For; hostile
ones connect from 127.0.0.2-6, untrusted addresses of their own, so wardgate's per-client bounds
apply to them and only them. Everything stays on loopback and stops by process id.

| honest | what |
|---|---|
| api | `GET /api/v1/auths/` with a session token, 2 clients x 40 req/s |
| signin | `POST /api/v1/auths/signin` with the right password, 1/s |
| stream | `POST /openai/chat/completions`, 20 SSE chunks 5 ms apart, one after another |

| hostile (127.0.0.2) | what |
|---|---|
| big heads | 1 MiB of header lines per request, 4 connections, 150 req/s |
| slow heads | one header line every 2 s, 64 connections |
| idle | 300 connections opened and never used (the per-client cap is 128) |
| bad sign-ins | wrong passwords for random accounts, 4 connections, 150 req/s |
| bad tokens | forged bearer tokens, 4 connections, 150 req/s |
| fuzzed bodies | random bytes and odd JSON to sign-in, sign-up and key routes, 150 req/s |

It prints, per honest kind: requests, errors, p50 and p99 quiet and under soak, and the ratio; the goal
is zero honest errors and p99 soak/quiet ≤ 3, and what the hostile clients were answered.

    .venv/bin/python bench/soak.py [--duration 60] [--quiet 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import harness
import httpx

import proxy

# Each hostile kind connects from an untrusted loopback address of its own (an attacker with several
# addresses), so that one kind's per-client bound does not shield wardgate from another.
SOURCES = {"idle": "127.0.0.2", "slow": "127.0.0.2", "big": "127.0.0.3", "signin": "127.0.0.4",
           "token": "127.0.0.5", "fuzz": "127.0.0.6"}  # fmt: skip
HOSTILE_RATE = 150  # requests/s at most per flooding kind
PASSWORD = "correct-horse-battery"
GOAL_P99_RATIO = 3.0


# --- honest clients -----------------------------------------------------------------------------


@dataclass
class Samples:
    """Latencies (ms) and errors of one kind of honest request."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


async def _paced(rate: float, until: float, step: object) -> None:
    interval = 1.0 / rate
    next_at = time.monotonic()
    while next_at < until:
        await step()  # type: ignore[operator]
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _timed(samples: Samples, call: object) -> None:
    started = time.perf_counter()
    try:
        response = await call()  # type: ignore[operator]
        ok = response.status_code == 200
    except httpx.HTTPError as exc:
        samples.errors[type(exc).__name__] += 1
        return
    if not ok:
        samples.errors[str(response.status_code)] += 1
        return
    samples.latencies.append((time.perf_counter() - started) * 1000)


async def honest(base: str, token: str, seconds: float) -> dict[str, Samples]:
    """Run the honest clients for `seconds`; their samples by kind."""
    results = {kind: Samples() for kind in ("api", "signin", "stream")}
    until = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=4)
    timeout = httpx.Timeout(10.0)

    async def api(n: int) -> None:
        headers = {"authorization": f"Bearer {token}", "x-forwarded-for": f"203.0.113.{n + 1}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=timeout) as c:
            await _paced(40, until, lambda: _timed(results["api"], lambda: c.get("/api/v1/auths/")))

    async def signin() -> None:
        headers = {"origin": base, "x-forwarded-for": "203.0.113.50"}
        body = {"email": "honest@example.com", "password": PASSWORD}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as c:

            async def once() -> httpx.Response:
                c.cookies.clear()
                return await c.post("/api/v1/auths/signin", json=body)

            await _paced(1, until, lambda: _timed(results["signin"], once))

    async def stream() -> None:
        headers = {"authorization": f"Bearer {token}", "x-forwarded-for": "203.0.113.60"}
        body = {"model": "m", "stream": True, "chunks": 20, "gap": 0.005}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=timeout) as c:

            async def once() -> httpx.Response:
                async with c.stream("POST", "/openai/chat/completions", json=body) as response:
                    text = b"".join([chunk async for chunk in response.aiter_bytes()])
                if response.status_code == 200 and b"[DONE]" not in text:
                    raise httpx.ReadError("stream ended without [DONE]")
                return response

            while time.monotonic() < until:
                await _timed(results["stream"], once)

    await asyncio.gather(api(0), api(1), signin(), stream())
    return results


# --- hostile clients (run in their own process) -------------------------------------------------


async def _connect(port: int, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCES[kind], 0))


async def _exchange(port: int, kind: str, request: bytes, answers: Counter[str]) -> None:
    try:
        reader, writer = await _connect(port, kind)
        writer.write(request)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 15)
        answers[line.split(b" ")[1].decode() if line.count(b" ") >= 2 else "closed"] += 1
        writer.close()
    except (TimeoutError, OSError, IndexError) as exc:
        answers[type(exc).__name__] += 1


def _request(method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", *headers]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def hostile(
    port: int, seconds: float, kinds: tuple[str, ...] = tuple(SOURCES)
) -> dict[str, Counter[str]]:
    """Every hostile client at once for `seconds`; what each was answered."""
    answers = {k: Counter[str]() for k in ("big", "slow", "idle", "signin", "token", "fuzz")}
    until = time.monotonic() + seconds

    async def loop(kind: str, make: object, connections: int) -> None:
        async def one() -> None:
            await _exchange(port, kind, make(), answers[kind])  # type: ignore[operator]

        await asyncio.gather(*(_paced(HOSTILE_RATE / connections, until, one) for _ in range(connections)))

    def big() -> bytes:
        return _request("GET", "/health", headers=tuple(f"X-Pad-{i}: {'a' * 1000}" for i in range(1024)))

    def bad_signin() -> bytes:
        body = json.dumps({"email": f"{secrets.token_hex(6)}@example.com", "password": "guess"}).encode()
        return _request("POST", "/api/v1/auths/signin", body, ("Origin: http://127.0.0.1",))

    def bad_token() -> bytes:
        forged = f"eyJhbGciOiJIUzI1NiJ9.{secrets.token_urlsafe(40)}.{secrets.token_urlsafe(32)}"
        return _request("GET", "/api/v1/auths/", headers=(f"Authorization: Bearer {forged}",))

    def fuzz() -> bytes:
        path = random.choice(["/api/v1/auths/signin", "/api/v1/auths/signup", "/api/v1/auths/api_keys"])
        body = random.choice(
            [os.urandom(random.randint(1, 4096)), b'{"email": [' * 200, b'{"name": "\\ud800"}', b"null"]
        )
        return _request("POST", path, body, ("Origin: http://127.0.0.1",))

    async def slow() -> None:
        while time.monotonic() < until:
            try:
                reader, writer = await _connect(port, "slow")
                writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                closed = False
                while time.monotonic() < until and not closed:
                    writer.write(b"X-Slow: 1\r\n")
                    await writer.drain()
                    try:  # anything from wardgate (a 408) or the end of the stream: it gave up on us
                        await asyncio.wait_for(reader.read(4096), 2)
                        closed = True
                    except TimeoutError:
                        pass
                answers["slow"]["closed by wardgate" if closed else "held to the end"] += 1
                writer.close()
            except OSError as exc:
                answers["slow"][type(exc).__name__] += 1
                await asyncio.sleep(0.5)

    async def idle() -> None:
        held = []
        for _ in range(300):
            try:
                held.append(await _connect(port, "idle"))
            except OSError as exc:
                answers["idle"][type(exc).__name__] += 1
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        answers["idle"]["closed by wardgate"] += sum(1 for reader, _ in held if reader.at_eof())
        answers["idle"]["open"] += sum(1 for reader, _ in held if not reader.at_eof())
        for _, writer in held:
            writer.close()

    clients = {
        "idle": [idle()],
        "slow": [slow() for _ in range(64)],
        "big": [loop("big", big, 4)],
        "signin": [loop("signin", bad_signin, 4)],
        "token": [loop("token", bad_token, 4)],
        "fuzz": [loop("fuzz", fuzz, 2)],
    }
    await asyncio.gather(*(task for kind in kinds for task in clients[kind]))
    return answers


def _hostile_process(
    port: int, seconds: float, kinds: tuple[str, ...], out: multiprocessing.Queue[dict[str, dict[str, int]]]
) -> None:
    answers = asyncio.run(hostile(port, seconds, kinds))
    out.put({kind: dict(counter) for kind, counter in answers.items()})


# --- the run ------------------------------------------------------------------------------------


def _row(kind: str, quiet: Samples, soak: Samples) -> list[str]:
    q50, q99 = harness.percentiles(quiet.latencies)
    s50, s99 = harness.percentiles(soak.latencies)
    errors = sum(quiet.errors.values()) + sum(soak.errors.values())
    detail = dict(quiet.errors + soak.errors) or ""
    return [kind, f"{len(quiet.latencies)}/{len(soak.latencies)}", f"{errors} {detail}".strip(),
            f"{q50:.1f}", f"{q99:.1f}", f"{s50:.1f}", f"{s99:.1f}", f"{s99 / q99:.2f}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of soak (hostile + honest)")
    parser.add_argument("--quiet", type=float, default=20, help="seconds of the quiet run (honest only)")
    parser.add_argument(
        "--hostile", default=",".join(SOURCES), help="comma-separated hostile kinds (default: all at once)"
    )
    args = parser.parse_args(argv)
    proxy.raise_fd_limit(4096)
    with (
        tempfile.TemporaryDirectory(prefix="wardgate-soak-") as tmp,
        proxy.running_pair(Path(tmp), []) as (_upstream, wardgate),
    ):
        token = proxy.sign_up(wardgate.url)
        admin = {"authorization": f"Bearer {token}", "origin": wardgate.url}
        body = {"name": "Honest", "email": "honest@example.com", "password": PASSWORD, "role": "user"}
        httpx.post(wardgate.url + "/api/v1/auths/add", json=body, headers=admin).raise_for_status()
        quiet = asyncio.run(honest(wardgate.url, token, args.quiet))
        rss_before = proxy.rss_kib(wardgate.pid)
        queue: multiprocessing.Queue[dict[str, dict[str, int]]] = multiprocessing.Queue()
        attacker = multiprocessing.Process(
            target=_hostile_process,
            args=(wardgate.port, args.duration, tuple(args.hostile.split(",")), queue),
        )
        attacker.start()
        time.sleep(2)  # the hostile clients are under way before the honest ones measure
        soak = asyncio.run(honest(wardgate.url, token, args.duration - 4))
        answers = queue.get(timeout=args.duration + 60)
        attacker.join(timeout=10)
        rss = proxy.rss_kib(wardgate.pid)
    headers = [
        "honest",
        "requests q/s",
        "errors",
        "p50 quiet",
        "p99 quiet",
        "p50 soak",
        "p99 soak",
        "p99 s/q",
    ]
    rows = [_row(kind, quiet[kind], soak[kind]) for kind in quiet]
    harness.print_table("honest clients (ms)", headers, rows)
    print("\nhostile clients, what they were answered:")
    for kind, counts in answers.items():
        print(f"  {kind:7} {dict(sorted(counts.items(), key=lambda kv: -kv[1]))}")
    print(f"\nwardgate RSS: {rss_before / 1024:.0f} MiB after the quiet run, {rss / 1024:.0f} MiB after soak")
    honest_errors = sum(sum(s.errors.values()) for s in (*quiet.values(), *soak.values()))
    worst = max(
        harness.percentiles(soak[k].latencies)[1] / harness.percentiles(quiet[k].latencies)[1] for k in quiet
    )
    ok = honest_errors == 0 and worst <= GOAL_P99_RATIO
    print(f"goal: zero honest errors ({honest_errors}) and p99 soak/quiet <= {GOAL_P99_RATIO} ({worst:.2f}):",
          "met" if ok else "NOT met")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
