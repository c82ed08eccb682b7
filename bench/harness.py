"""What the benchmarks share: `wrk --latency` output, the Python fallback load, stopping a server."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass

import httpx

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    """Throughput, latency percentiles and counts of one wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors and timeouts


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output; raise ValueError naming what is missing."""
    errors = int(_find(r"Non-2xx or 3xx responses:\s*(\d+)", text, "0"))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return WrkResult(
        requests_per_s=float(_find(r"^Requests/sec:\s*([\d.]+)\s*$", text)),
        p50_ms=_latency_ms(text, 50),
        p99_ms=_latency_ms(text, 99),
        requests=int(_find(r"^\s*(\d+) requests in ", text)),
        errors=errors,
    )


def _find(pattern: str, text: str, default: str | None = None) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    if match:
        return match.group(1)
    if default is None:
        raise ValueError(f"wrk output has no match for {pattern!r}:\n{text}")
    return default


def _latency_ms(text: str, percent: int) -> float:
    match = re.search(rf"^\s*{percent}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk output has no {percent}% latency line (was --latency given?):\n{text}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (graceful shutdown), then SIGKILL after 15 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


async def python_load(url: str, headers: dict[str, str], duration: float, connections: int) -> WrkResult:
    """The fallback without wrk: a closed-loop asyncio + httpx generator (slower: it measures itself too)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10) as client:
        deadline = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                try:
                    ok = (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += not ok

        begun = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - begun
    p50, p99 = percentiles(latencies)
    return WrkResult(len(latencies) / elapsed, p50, p99, len(latencies), errors)


def percentiles(samples_ms: list[float]) -> tuple[float, float]:
    """p50 and p99 of at least two samples."""
    cuts = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return cuts[49], cuts[98]


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A titled table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    print(f"\n{title}")
    for row in [headers, *rows]:
        cells = [f"{row[0]:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True))]
        print("    " + "  ".join(cells))
