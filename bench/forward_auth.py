"""Forward auth, measured: how fast wardgate decides, and what a decision costs nginx's data path.

Run by hand (needs wrk and Debian's nginx): `.venv/bin/python bench/forward_auth.py [--duration 10]`.
One run, side by side, on loopback:

- wardgate `/health` (the floor of its HTTP stack) against `/api/v1/authz/auth-request` with a
  session cookie: decisions per second;
- nginx → app direct against nginx → app with `auth_request` to wardgate (the configuration in the
  README and in tests/forward_auth): the data path operators would choose between.

The app is the fake upstream of the proxy tests; each process is stopped by its process id.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from tests.conftest import PASSWORD, SECRET
from tests.forward_auth import proxies
from tests.servers import fake_upstream_process, free_port, wardgate_process

RULES = '[[sites]]\nhost = "127.0.0.1"\n'


def wrk(url: str, headers: dict[str, str], connections: int, duration: int) -> harness.WrkResult:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()}")
    return harness.parse_wrk(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        run = Path(temp)
        (run / "rules.toml").write_text(RULES)
        port = free_port()
        env = {
            "DATA_DIR": str(run),
            "WEBUI_SECRET_KEY": SECRET,
            "PORT": str(port),
            "WEBUI_URL": f"http://127.0.0.1:{port}",
            "FORWARD_AUTH_FILE": str(run / "rules.toml"),
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "GLOBAL_LOG_LEVEL": "WARNING",
        }
        with (
            fake_upstream_process() as app,
            wardgate_process(env) as wardgate,
            proxies.nginx(run / "nginx", wardgate, app) as nginx,
        ):
            signed = httpx.post(
                f"{wardgate}/api/v1/auths/signup",
                json={"name": "Bench", "email": "bench@example.test", "password": PASSWORD},
                headers={"origin": wardgate},
            )
            cookie = {"Cookie": f"token={signed.json()['token']}"}
            decision = {**cookie, "X-Original-URL": f"{nginx}/x", "X-Original-Method": "GET"}
            rows = {
                "wardgate /health": wrk(f"{wardgate}/health", {}, args.connections, args.duration),
                "wardgate decision": wrk(
                    f"{wardgate}/api/v1/authz/auth-request", decision, args.connections, args.duration
                ),
                "nginx -> app direct": wrk(f"{nginx}/direct/x", {}, args.connections, args.duration),
                "nginx -> app, forward auth": wrk(f"{nginx}/x", cookie, args.connections, args.duration),
            }
    print(f"{'':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in rows.items():
        print(f"{name:28} {r.requests_per_s:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}")
    health, decide = rows["wardgate /health"], rows["wardgate decision"]
    direct, guarded = rows["nginx -> app direct"], rows["nginx -> app, forward auth"]
    print(f"decisions against /health: {decide.requests_per_s / health.requests_per_s:.2f}x")
    print(f"nginx with forward auth against direct: {guarded.requests_per_s / direct.requests_per_s:.2f}x")


if __name__ == "__main__":
    main()
