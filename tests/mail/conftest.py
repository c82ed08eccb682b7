"""A real SMTP server process on loopback (aiosmtpd) that keeps what it receives in a Maildir, and
an in-process wardgate that sends its password-reset email there."""

from __future__ import annotations

import mailbox
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import trustme
from fastapi import FastAPI
from starlette.testclient import TestClient

from tests.servers import free_port, stop
from wardgate.app import create_app
from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.http import application
from wardgate.http.routes import password_reset
from wardgate.identity.password_reset import password_resets_from_settings

MAILBOX = "aiosmtpd.handlers.Mailbox"  # keeps each message in a Maildir the test reads


@dataclass
class SmtpServer:
    """One aiosmtpd process: where it listens and the mail it has received."""

    port: int
    maildir: Path
    ca_file: Path | None

    def messages(self) -> list[Message]:
        """Every message received so far, oldest first."""
        box = mailbox.Maildir(self.maildir, create=False)
        found = sorted(box, key=lambda m: m["Date"] or "")
        return list(found)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Message]:
        """Wait until `count` messages arrived (the email leaves after the answer)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} messages, got {len(self.messages())}")


def _wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("aiosmtpd exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("aiosmtpd did not listen")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA made now (not in the system store) and a certificate for localhost it signed."""
    directory = tmp_path_factory.mktemp("smtp-tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    return files


@pytest.fixture
def start_smtp(tmp_path: Path, tls_files: dict[str, Path]) -> Iterator[Callable[..., SmtpServer]]:
    """Start aiosmtpd processes (with STARTTLS unless `starttls=False`); stopped after the test."""
    processes: list[subprocess.Popen[Any]] = []

    def start(*, starttls: bool = True) -> SmtpServer:
        port = free_port()
        maildir = tmp_path / f"mail-{port}"
        mailbox.Maildir(maildir, create=True)
        tls = ["--tlscert", str(tls_files["cert"]), "--tlskey", str(tls_files["key"])] if starttls else []
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                f"127.0.0.1:{port}",
                *tls,
                "-c",
                MAILBOX,
                str(maildir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        _wait_listening(port, process)
        return SmtpServer(port, maildir, tls_files["ca"] if starttls else None)

    yield start
    for process in processes:
        stop(process)


@pytest.fixture
def reset_client(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TestClient]]:
    """An in-process wardgate whose reset email goes to an SMTP server of the test."""
    clients: list[TestClient] = []
    built = application.build_routes

    def with_resets(gateway: Gateway, **kw: Any) -> FastAPI:
        # The two lines the composition adds for password reset (see the route module), here until
        # application.py carries them.
        app = built(gateway, **kw)
        if not hasattr(app.state, "password_resets"):
            app.include_router(password_reset.router, prefix=gateway.settings.route_prefix)
            app.state.password_resets = password_resets_from_settings(
                gateway.settings, gateway.accounts, gateway.sessions, gateway.limiter, gateway.audit
            )
        return app

    monkeypatch.setattr(application, "build_routes", with_resets)

    def make(server: SmtpServer, **overrides: str) -> TestClient:
        env = {
            "SMTP_HOST": "localhost",
            "SMTP_PORT": str(server.port),
            "SMTP_FROM": "wardgate@example.com",
            "SMTP_TIMEOUT": "5",
            "WEBUI_URL": "https://gate.example.com",
            **({"SMTP_CA_CERT_FILE": str(server.ca_file)} if server.ca_file else {}),
            **overrides,
        }
        origin = env["WEBUI_URL"]  # the site's origin, for the CSRF check
        client = TestClient(create_app(make_settings(**env)), base_url=origin, headers={"origin": origin})
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
