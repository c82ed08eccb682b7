"""Private nginx and Caddy instances on loopback, each guarding the fake app with wardgate's forward
auth: their configurations are the README's, with ports filled in. Started and stopped by process id."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.servers import free_port, service_missing, stop

NGINX = r"""
worker_processes 1;
pid        {run}/nginx.pid;
error_log  {run}/error.log warn;
daemon     off;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path       {run}/proxy;
    fastcgi_temp_path     {run}/fastcgi;
    uwsgi_temp_path       {run}/uwsgi;
    scgi_temp_path        {run}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    # wardgate's session cookie is for wardgate: the app gets every other cookie, never that one.
    map $http_cookie $cookie_for_app {{
        default $http_cookie;
        "~^(?<before>.*?)(?:^|;\s*)token=[^;]*(?<after>.*)$" "$before$after";
    }}
    upstream wardgate {{ server {wardgate}; keepalive 16; }}
    upstream app      {{ server {app}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            auth_request /_wardgate;
            auth_request_set $wg_user   $upstream_http_remote_user;
            auth_request_set $wg_email  $upstream_http_remote_email;
            auth_request_set $wg_name   $upstream_http_remote_name;
            auth_request_set $wg_groups $upstream_http_remote_groups;
            auth_request_set $wg_role   $upstream_http_remote_role;
            auth_request_set $wg_signin $upstream_http_location;
            error_page 401 =302 $wg_signin;
            proxy_set_header Remote-User   $wg_user;
            proxy_set_header Remote-Email  $wg_email;
            proxy_set_header Remote-Name   $wg_name;
            proxy_set_header Remote-Groups $wg_groups;
            proxy_set_header Remote-Role   $wg_role;
            proxy_set_header Cookie $cookie_for_app;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_http_version 1.1;
            proxy_pass http://app;
        }}
        location {direct} {{
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_http_version 1.1;
            proxy_pass http://app/;
        }}
        location = /_wardgate {{
            internal;
            proxy_pass http://wardgate/api/v1/authz/auth-request;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Connection "";
            proxy_http_version 1.1;
            proxy_set_header X-Original-URL http://127.0.0.1:{port}$request_uri;  # this server's own
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
"""

CADDY = r"""
{{
	admin off
	auto_https off
}}
http://127.0.0.1:{port} {{
	bind 127.0.0.1
	forward_auth {wardgate} {{
		uri /api/v1/authz/forward-auth
		copy_headers Remote-User Remote-Email Remote-Name Remote-Groups Remote-Role
	}}
	reverse_proxy {app} {{
		header_up Cookie "(^|;\s*)token=[^;]*" "${{1}}token="
	}}
}}
"""


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if found is None:
        service_missing(name, "run ./scripts/test (it installs Debian's nginx and caddy)")
    return found


def _wait(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"not listening at {base}")


@contextmanager
def nginx(run: Path, wardgate: str, app: str, *, direct: str = "/direct/") -> Iterator[str]:
    """nginx guarding `app` with wardgate's `auth-request`; `direct` is an unguarded route to the app
    (for the benchmark's side-by-side row). Yields its base URL."""
    run.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = run / "nginx.conf"
    config.write_text(
        NGINX.format(run=run, port=port, wardgate=_hostport(wardgate), app=_hostport(app), direct=direct)
    )
    with _running([_binary("nginx"), "-p", str(run), "-c", str(config)], port, run / "error.log") as base:
        yield base


@contextmanager
def caddy(run: Path, wardgate: str, app: str) -> Iterator[str]:
    """Caddy guarding `app` with wardgate's `forward-auth`. Yields its base URL."""
    run.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = run / "Caddyfile"
    config.write_text(CADDY.format(port=port, wardgate=_hostport(wardgate), app=_hostport(app)))
    env = {**os.environ, "XDG_DATA_HOME": str(run / "data"), "XDG_CONFIG_HOME": str(run / "config")}
    argv = [_binary("caddy"), "run", "--config", str(config), "--adapter", "caddyfile"]
    with _running(argv, port, run / "caddy.log", env=env) as base:
        yield base


@contextmanager
def _running(argv: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run a proxy (its output to `log`) until it listens on `port`; its base URL; stopped by pid."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, process, log)
        yield base
    finally:
        stop(process)


def _hostport(base: str) -> str:
    return base.split("://", 1)[1].rstrip("/")
