"""What the benchmarks share: reading `wrk --latency` output and stopping a server process."""

from __future__ import annotations

import re
import signal
import subprocess
from dataclasses import dataclass

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass(frozen=True)
class WrkResult:
    """Throughput, latency percentiles and counts of one wrk run."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx responses plus socket errors and timeouts


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
