"""Memory after start: wardgate's default start against the floor it stands on.

Each row is a fresh server process on a free loopback port; its resident set (VmRSS) is read once
it has answered 200 and then idled for a second (what an operator's `ps` shows). Rows (1) to (4)
are the same bare FastAPI app, one `async def` route on uvicorn with uvloop and httptools, that
imports more and more of the libraries every wardgate start serves with (imported, nothing built
with them); the last is wardgate itself:

(1) bare FastAPI             the floor the issue names ("a bare FastAPI app is 50 MB")
(2) + SQLAlchemy Core        the engine, the SQL compiler and the SQLite dialect (sqlite3)
(3) + the ORM                `sqlalchemy.orm`, which every store module queries with
(4) + the other core libs    PyJWT (which loads cryptography's asymmetric algorithms), the AEAD
                             that protects stored secrets, argon2-cffi, pydantic-settings, limits
(5) wardgate serve           default settings (SQLite, no metrics, no OAuth/LDAP/Redis), on a
                             database already migrated (a second start: Alembic stays unloaded)

It prints the median of `--runs` starts of each, the difference between rows, and the issue-17
goal (RSS after start <= 80 MB) against (4) and (5): (4) is what no wardgate code can go below
while FastAPI and SQLAlchemy's ORM are in the serving process.

    .venv/bin/python bench/memory.py [--runs 3]     # about 20 s
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import harness
import httpx

GOAL_MIB = 80
_CORE = ("sqlalchemy", "sqlite3")
_ORM = (*_CORE, "sqlalchemy.orm")
_LIBRARIES = (
    *_ORM,
    *("jwt", "cryptography.hazmat.primitives.ciphers.aead", "argon2", "pydantic_settings", "limits"),
)
# The floor: the libraries are imported first, then the app is built and served as wardgate serves.
_FLOOR = """
import gc, importlib, sys
gc.disable()
for name in sys.argv[2:]:
    importlib.import_module(name)
import uvicorn
from fastapi import FastAPI
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
@app.get("/health")
async def health() -> dict[str, bool]:
    return {"status": True}
gc.collect(); gc.freeze(); gc.enable()
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            log_level="warning", access_log=False)
"""


@dataclass(frozen=True)
class Row:
    """A server to start: how, and what it is."""

    name: str
    wardgate: bool = False
    imports: tuple[str, ...] = ()


ROWS = (
    Row("(1) bare FastAPI"),
    Row("(2) + SQLAlchemy Core, sqlite3", imports=_CORE),
    Row("(3) + SQLAlchemy ORM", imports=_ORM),
    Row("(4) + PyJWT, cryptography, argon2, pydantic-settings, limits", imports=_LIBRARIES),
    Row("(5) wardgate serve (default settings)", wardgate=True),
)


def resident_mib(pid: int) -> float:
    """VmRSS of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start(row: Row, data_dir: Path) -> float:
    """Start the row's server, wait for its first 200, idle a second, read its RSS, stop it."""
    port = harness.free_port()
    if row.wardgate:
        argv = [sys.executable, "-m", "wardgate", "serve"]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(data_dir),
            "DATA_DIR": str(data_dir),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WEBUI_SECRET_KEY": secrets.token_urlsafe(32),
        }
    else:
        argv = [sys.executable, "-c", _FLOOR, str(port), *row.imports]
        env = {"PATH": os.environ.get("PATH", "")}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{row.name} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{row.name} did not answer within 60 s")
            time.sleep(0.05)
        time.sleep(1.0)
        return resident_mib(process.pid)
    finally:
        harness.stop_process(process)


def main() -> int:
    """Start every row `--runs` times (alternating), print medians, differences and the goal."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="starts of each row, medians reported (default 3)"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be positive")
    samples: dict[str, list[float]] = {row.name: [] for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="wardgate-bench-memory-") as tmp:
        data_dir = Path(tmp)
        start(ROWS[-1], data_dir)  # the first start migrates (Alembic): measured are the starts after it
        for _ in range(args.runs):
            for row in ROWS:
                samples[row.name].append(start(row, data_dir))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    rows, previous = [], None
    for name, values in samples.items():
        added = "-" if previous is None else f"+{medians[name] - previous:.1f}"
        spread = f"{min(values):.1f}-{max(values):.1f}"
        rows.append([name, f"{medians[name]:.1f}", added, spread])
        previous = medians[name]
    title = f"RSS after start, MiB: medians of {args.runs} starts each, one process at a time"
    harness.print_table(title, ["server", "RSS", "vs row above", "min-max"], rows)
    floor, wardgate = medians[ROWS[-2].name], medians[ROWS[-1].name]
    goals = [
        ["(4) the floor with wardgate's core libraries", f"{floor:.1f}", f"<= {GOAL_MIB}", _verdict(floor)],
        ["(5) wardgate serve", f"{wardgate:.1f}", f"<= {GOAL_MIB}", _verdict(wardgate)],
        ["(5) - (4): wardgate's own modules, views and start", f"{wardgate - floor:.1f}", "-", "info"],
    ]
    harness.print_table("goal (issue 17)", ["measure", "MiB", "goal", "verdict"], goals)
    return 0


def _verdict(mib: float) -> str:
    return "PASS" if mib <= GOAL_MIB else "MISS"


if __name__ == "__main__":
    sys.exit(main())
