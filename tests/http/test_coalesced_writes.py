"""The server's transport wrapper (`CoalescedWrites`): an answer's head and body leave in one
system call, in order, and nothing held is lost, or delayed past the next write, the answer's
completion, the loop's step or a close."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from tests.servers import served_in_thread

from wardgate.config.network import TrustedProxies
from wardgate.http.server import CoalescedWrites, ConnectionLimits, protocol_for

LIMITS = ConnectionLimits(
    max_head_bytes=8192,
    head_timeout=10,
    body_timeout=60,
    send_timeout=60,
    max_per_client=100,
    ipv6_prefix=64,
    trusted=TrustedProxies(),
)


class Recording(asyncio.Transport):
    """A transport that records each call that would be a system call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def sent(transport: Recording) -> bytes:
    out = b""
    for kind, data in transport.calls:
        if kind == "write":
            out += data
        elif kind == "writelines":
            out += b"".join(data)
    return out


@pytest.mark.anyio
async def test_a_head_and_body_leave_in_one_call_in_order() -> None:
    transport = Recording()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())
    writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.calls == []  # held for the body
    assert writes.get_write_buffer_size() == 38 + 7  # held, and the transport's own
    writes.write(b"ok")
    assert transport.calls == [("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"])]


@pytest.mark.anyio
async def test_a_streams_chunk_waits_for_the_next_at_most() -> None:
    transport = Recording()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())
    for n in range(5):  # a flood: the relay writes without yielding to the loop
        writes.write(b"data: %d\n\n" % n)
    assert sent(transport) == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n"  # in pairs
    writes.flush()  # the protocol, as the answer completes
    assert sent(transport) == b"".join(b"data: %d\n\n" % n for n in range(5))


@pytest.mark.anyio
async def test_what_is_held_leaves_at_the_end_of_the_loops_step() -> None:
    transport = Recording()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())
    writes.write(b"data: 1\n\n")  # a stream's chunk, then the relay waits for the upstream
    await asyncio.sleep(0)
    assert transport.calls == [("write", b"data: 1\n\n")]
    writes.write(b"data: 2\n\n")
    writes.writelines([b"a", b"b"])
    await asyncio.sleep(0)
    assert sent(transport) == b"data: 1\n\ndata: 2\n\nab"


@pytest.mark.anyio
async def test_a_close_sends_what_is_held_first_and_an_abort_drops_it() -> None:
    loop = asyncio.get_running_loop()
    closed, aborted = Recording(), Recording()
    writes = CoalescedWrites(closed, loop)
    writes.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
    writes.close()
    assert closed.calls == [
        ("write", b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"),
        ("close", None),
    ]
    writes = CoalescedWrites(aborted, loop)
    writes.write(b"partial")
    writes.abort()
    await asyncio.sleep(0)  # the step's flush finds nothing held
    assert aborted.calls == [("abort", None)]


@pytest.mark.anyio
async def test_everything_else_is_the_transports() -> None:
    transport = Recording()
    writes = CoalescedWrites(transport, asyncio.get_running_loop())
    assert writes.get_extra_info("peername") == ("127.0.0.1", 5)
    assert not writes.is_closing()
    writes.write(b"")  # nothing to send: nothing scheduled
    await asyncio.sleep(0)
    assert transport.calls == []


def test_a_client_gone_mid_stream_leaves_nothing_to_flush(caplog: pytest.LogCaptureFixture) -> None:
    """A stream's held chunk is forgotten when the connection is lost: flushed later, it would be
    written to a closed handle ("Exception in callback CoalescedWrites.flush()" logged as an error for
    every client that hangs up mid-stream)."""

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(20_000):  # a flood, one chunk per step of the loop, until the client is gone
            await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
            await asyncio.sleep(0)

    with (
        served_in_thread(stream, protocol_for(LIMITS), log_level="warning") as port,
        caplog.at_level(logging.ERROR, logger="asyncio"),
    ):
        for _ in range(20):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # a reset, as a client that hangs up mid-stream
        time.sleep(0.2)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
