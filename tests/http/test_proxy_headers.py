"""Trusted proxies: X-Forwarded-* believed only from FORWARDED_ALLOW_IPS, and never left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from wardgate.config import load_settings
from wardgate.config.network import trusted_proxies
from wardgate.errors import ConfigError
from wardgate.http.middleware.trusted_proxy import TrustedProxyMiddleware

SEEN: list[Scope] = []


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Record the scope the app was given; answer 200 (HTTP) or accept (WebSocket)."""
    SEEN.append(scope)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _seen(
    trusted: str, headers: dict[str, str], *, peer: str = "10.0.0.1", base_url: str = "http://wardgate.test"
) -> Scope:
    SEEN.clear()
    transport = httpx.ASGITransport(
        app=TrustedProxyMiddleware(_echo, trusted_proxies(trusted)), client=(peer, 4321)
    )
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        await client.get("/", headers=headers)
    [scope] = SEEN
    return scope


def _host(scope: Scope) -> list[bytes]:
    return [value for name, value in scope["headers"] if name == b"host"]


def _forwarding_left(scope: Scope) -> list[bytes]:
    return [
        name
        for name, _ in scope["headers"]
        if name.startswith(b"x-forwarded") or name in (b"forwarded", b"x-real-ip")
    ]


SPOOF = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=6.6.6.6",
    "X-Real-IP": "6.6.6.6",
}


@pytest.mark.anyio
async def test_untrusted_peer_headers_are_ignored_and_removed() -> None:
    scope = await _seen("127.0.0.1", SPOOF, peer="203.0.113.9")
    assert scope["client"] == ("203.0.113.9", 4321)
    assert scope["scheme"] == "http"
    assert _host(scope) == [b"wardgate.test"]
    assert _forwarding_left(scope) == []


@pytest.mark.anyio
async def test_trusted_peer_headers_are_honoured() -> None:
    headers = {
        "X-Forwarded-For": "198.51.100.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "chat.example.com",
    }
    scope = await _seen("10.0.0.0/8", headers)
    assert scope["client"] == ("198.51.100.7", 0)
    assert scope["scheme"] == "https"
    assert _host(scope) == [b"chat.example.com"]
    assert _forwarding_left(scope) == []


@pytest.mark.anyio
async def test_no_forwarded_headers_from_trusted_peer_changes_nothing() -> None:
    scope = await _seen("10.0.0.1", {})
    assert scope["client"] == ("10.0.0.1", 4321)
    assert scope["scheme"] == "http"
    assert _host(scope) == [b"wardgate.test"]


@pytest.mark.parametrize(
    ("trusted", "chain", "client"),
    [
        # The client wrote 6.6.6.6 itself; the proxy 10.0.0.1 appended the real peer 198.51.100.7.
        ("10.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
        # Two trusted hops: skip 10.0.0.2, stop at the first untrusted address.
        ("10.0.0.0/8", "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
        ("10.0.0.0/8", "6.6.6.6,198.51.100.7,10.0.0.2", "198.51.100.7"),
        # Every hop trusted: the leftmost is the client.
        ("10.0.0.0/8", "10.1.1.1, 10.0.0.2", "10.1.1.1"),
        # Garbage written by the client left of the real peer does not matter.
        ("10.0.0.1", "not-an-ip, 198.51.100.7", "198.51.100.7"),
        # Garbage right after a trusted hop: the nearest trusted hop is the client.
        ("10.0.0.0/8", "198.51.100.7, nonsense, 10.0.0.2", "10.0.0.2"),
        ("10.0.0.1", "nonsense", "10.0.0.1"),
        # Ports and brackets written by some proxies.
        ("10.0.0.1", "198.51.100.7:5555", "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::7]:5555", "2001:db8::7"),
        ("10.0.0.1", "2001:db8::7", "2001:db8::7"),
        # IPv4-mapped IPv6 is compared as IPv4.
        ("10.0.0.0/8", "198.51.100.7, ::ffff:10.0.0.3", "198.51.100.7"),
        ("*", "6.6.6.6, 198.51.100.7", "6.6.6.6"),
    ],
)
@pytest.mark.anyio
async def test_forwarded_for_chain(trusted: str, chain: str, client: str) -> None:
    scope = await _seen(trusted, {"X-Forwarded-For": chain})
    expected_port = 4321 if client == "10.0.0.1" else 0
    assert scope["client"] == (client, expected_port)


@pytest.mark.anyio
async def test_forwarded_for_over_several_header_lines() -> None:
    SEEN.clear()
    transport = httpx.ASGITransport(
        app=TrustedProxyMiddleware(_echo, trusted_proxies("10.0.0.0/8")), client=("10.0.0.1", 1)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://wardgate.test") as client:
        await client.get(
            "/", headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.7, 10.0.0.9")]
        )
    assert SEEN[0]["client"] == ("198.51.100.7", 0)


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [
        ("https", "https"),
        ("HTTPS", "https"),
        ("http", "http"),
        ("wss", "https"),
        ("http, https", "https"),
        ("gopher", "http"),
    ],
)
@pytest.mark.anyio
async def test_forwarded_proto(proto: str, scheme: str) -> None:
    assert (await _seen("10.0.0.1", {"X-Forwarded-Proto": proto}))["scheme"] == scheme


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("chat.example.com", b"chat.example.com"),
        ("chat.example.com:8443", b"chat.example.com:8443"),
        ("[2001:db8::1]:443", b"[2001:db8::1]:443"),
        ("a.example, chat.example.com", b"chat.example.com"),
        ("evil.example/path", b"wardgate.test"),
        ("evil example", b"wardgate.test"),
        ("user@evil.example", b"wardgate.test"),
        ("-bad-.example", b"wardgate.test"),
        ("x" * 300, b"wardgate.test"),
    ],
)
@pytest.mark.anyio
async def test_forwarded_host_must_be_plausible(host: str, expected: bytes) -> None:
    assert _host(await _seen("10.0.0.1", {"X-Forwarded-Host": host})) == [expected]


@pytest.mark.anyio
async def test_unix_socket_peer_is_trusted_only_under_star() -> None:
    for trusted, scheme in (("127.0.0.1", "http"), ("*", "https")):
        SEEN.clear()
        scope: dict[str, Any] = {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(b"host", b"wardgate.test"), (b"x-forwarded-proto", b"https")],
            "scheme": "http",
            "client": None,
        }
        await TrustedProxyMiddleware(_echo, trusted_proxies(trusted))(scope, _no_receive, _no_send)
        assert SEEN[0]["scheme"] == scheme


async def _no_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _no_send(message: Message) -> None:
    return None


@pytest.mark.parametrize(
    ("peer", "scheme", "client"), [("10.0.0.1", "wss", "198.51.100.7"), ("6.6.6.6", "ws", "6.6.6.6")]
)
@pytest.mark.anyio
async def test_websocket_scopes(peer: str, scheme: str, client: str) -> None:
    SEEN.clear()
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws",
        "headers": [
            (b"host", b"wardgate.test"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-for", b"198.51.100.7"),
        ],
        "scheme": "ws",
        "client": (peer, 1),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await TrustedProxyMiddleware(_echo, trusted_proxies("10.0.0.1"))(scope, receive, send)
    assert SEEN[0]["scheme"] == scheme
    assert SEEN[0]["client"][0] == client
    assert _forwarding_left(SEEN[0]) == []
    assert scope["headers"][1] == (b"x-forwarded-proto", b"https")  # the caller's scope is not modified


@pytest.mark.anyio
async def test_lifespan_passes_through() -> None:
    SEEN.clear()
    calls: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["type"])

    await TrustedProxyMiddleware(lifespan_app, trusted_proxies("*"))(
        {"type": "lifespan"}, _no_receive, _no_send
    )
    assert calls == ["lifespan"]


@pytest.mark.parametrize(
    ("value", "trusts", "distrusts"),
    [
        ("127.0.0.1", ["127.0.0.1", "::ffff:127.0.0.1"], ["127.0.0.2", "::1", None, "testclient"]),
        ("127.0.0.1, ::1", ["127.0.0.1", "::1"], ["10.0.0.1"]),
        ("10.0.0.0/8,fd00::/8", ["10.255.0.1", "fd00::5"], ["11.0.0.1", "fe80::1"]),
        ("", [], ["127.0.0.1", None]),
        (" , ", [], ["127.0.0.1"]),
        ("*", ["1.2.3.4", "::1", None], []),
    ],
)
def test_parse_trusted_proxies(value: str, trusts: list[str | None], distrusts: list[str | None]) -> None:
    proxies = trusted_proxies(value)
    assert all(proxies.trusts(host) for host in trusts)
    assert not any(proxies.trusts(host) for host in distrusts)


@pytest.mark.parametrize(
    "value",
    [
        "localhost",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "1.2.3.4.5",
        "*, 10.0.0.1",
        "10.0.0.1;10.0.0.2",
        "unix:/tmp/s",
    ],
)
def test_bad_forwarded_allow_ips_entries_raise(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected|'\*'"):
        trusted_proxies(value)
    with pytest.raises(ConfigError) as refused:  # at load: one problem, naming the variable
        load_settings({"DATA_DIR": str(tmp_path), "FORWARDED_ALLOW_IPS": value}, env_file=None)
    (problem,) = refused.value.problems
    assert problem.startswith("FORWARDED_ALLOW_IPS=")
