"""The server's protocol in process, on a transport that records: what a connection holds while
requests are pipelined, and how a stopped connection behaves. Each case was found by a review with
this same arrangement (the real protocol class, uvicorn's own cycles and flow control, no sockets);
the same limits over TCP are tests/hostile/test_server.py."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from tests.http.test_coalesced_writes import LIMITS  # the same connection limits (8 KiB heads)
from uvicorn.server import ServerState

from wardgate.http.server import BoundedHttpToolsProtocol, protocol_for


class Transport(asyncio.Transport):
    """Records what is written, and whether reading is paused."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False
        self.reading = True
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.7", 5555), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def write(self, data: Any) -> None:
        if not self.closed:
            self.written += bytes(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    """A GET is answered at once; a POST is left waiting (its app is busy elsewhere)."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        await asyncio.sleep(3600)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _reading(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body, then answers."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _connection(app: Any = _answer) -> tuple[BoundedHttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, http="httptools", log_level="warning")
    config.load()
    protocol = protocol_for(LIMITS)(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


async def _settle() -> None:
    """Let the connection's tasks run (101 answers one after another take a few steps each)."""
    for _ in range(2000):
        await asyncio.sleep(0)


def _statuses(transport: Transport) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", transport.written)


def test_a_queued_requests_body_waits_for_its_app_not_in_memory() -> None:
    """Each answer resumed reading, and each read went into the body of a request queued behind
    the answers: 26 MB before its app started, from one connection."""

    async def scenario() -> int:
        protocol, transport = _connection()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 99 + b"POST / HTTP/1.1\r\nHost: x\r\n")
        protocol.data_received(b"Content-Length: 1000000000\r\n\r\n")
        held = 0
        for _ in range(200):
            await asyncio.sleep(0)
            if transport.reading and not transport.closed:
                protocol.data_received(b"b" * 262_144)  # what uvloop reads at once
            held = max(held, len(protocol.cycle.body))
        transport.close()
        await _settle()
        return held

    assert asyncio.run(scenario()) <= 2 * 262_144


async def _slow_get_reading_post(scope: Scope, receive: Receive, send: Send) -> None:
    """A GET takes an hour (an answer the queue waits behind); a POST reads its body and answers."""
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await asyncio.sleep(3600)
    await _reading(scope, receive, send)


def test_bodies_queued_behind_an_answer_are_held_to_the_mark_in_all() -> None:
    """uvicorn counted each queued request's body alone: behind one slow answer, a hundred bodies of
    60 KB each (under the mark one by one) waited in memory, 6 MB from one connection (found by
    review)."""

    async def scenario() -> int:
        protocol, transport = _connection(_slow_get_reading_post)
        post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + b"b" * 60_000
        stream = post * 40 + b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + post * 90
        held = 0
        for _ in range(3000):
            await asyncio.sleep(0)
            if stream and transport.reading and not transport.closed:
                protocol.data_received(stream[:262_144])  # what uvloop reads at once
                stream = stream[262_144:]
            held = max(held, sum(len(c.body) for c, _ in protocol.pipeline))
        transport.close()
        await _settle()
        return held

    assert asyncio.run(scenario()) <= 2 * 262_144


def test_an_upgrade_on_a_stopped_connection_is_not_one() -> None:
    """Past the pipelining limit a WebSocket head was still upgraded, from the head of an earlier
    request (KeyError, the queued answers lost, a traceback logged per connection)."""

    async def scenario() -> tuple[list[bytes], bool]:
        protocol, transport = _connection()
        upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        upgrade += b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 101 + upgrade)
        await _settle()
        return _statuses(transport), transport.closed

    statuses, closed = asyncio.run(scenario())
    assert statuses == [b"HTTP/1.1 200 OK"] * 101 and closed


def test_what_trailers_counted_is_not_the_next_heads() -> None:
    """7 KB of trailers under the 8 KB limit, then a 2 KB head on the same connection: it was
    refused 431, the trailers' bytes still counted."""

    async def scenario() -> list[bytes]:
        protocol, transport = _connection()
        protocol.data_received(
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await _settle()
        protocol.data_received(b"0\r\nX-T: " + b"v" * 7000 + b"\r\n\r\n")
        await _settle()
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 2000 + b"\r\n\r\n")
        await _settle()
        return _statuses(transport)

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK"] * 2


def test_a_trailer_field_that_never_ends_is_refused_at_the_limit() -> None:
    """The parser holds a header field whole until it ends, before any callback sees it: 50 MB of
    one trailer value were held, and the connection stayed open."""

    async def scenario() -> tuple[int, bool, list[bytes]]:
        protocol, transport = _connection()
        protocol.data_received(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await _settle()
        protocol.data_received(b"0\r\nX-Trailer: ")
        fed = 0
        while transport.reading and not transport.closed and fed < 200:
            protocol.data_received(b"a" * 262_144)
            fed += 1
        await _settle()
        return fed, transport.closed, _statuses(transport)

    fed, closed, statuses = asyncio.run(scenario())
    assert fed <= 1 and closed and statuses == [b"HTTP/1.1 431 Request Header Fields Too Large"]


def test_heads_pipelined_after_a_chunked_body_are_not_counted_as_its_framing() -> None:
    """Found by review of the trailer bound: a read that ended a chunked body and carried whole
    pipelined heads counted them all as bytes without body, and the connection was closed with the
    first request's answer unsent (its app had already run)."""

    async def scenario() -> list[bytes]:
        protocol, transport = _connection(_reading)
        protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
        await _settle()
        get = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n"
        protocol.data_received(
            b"\r\n0\r\n\r\n" + get * 3 + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        )
        await _settle()
        protocol.data_received(b"world")
        await _settle()
        return _statuses(transport)

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK"] * 5
