"""The upstream HTTP/1.1 client against scripted upstreams on real sockets: framing, pooling, errors.

Every upstream here is an `asyncio.start_server` on 127.0.0.1 that reads the raw request bytes and
writes raw answer bytes, counting the connections it accepts: what a test asserts about keep-alive,
retries or injection is what crossed the wire.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop

from wardgate.errors import UpstreamError, UpstreamTimeoutError
from wardgate.proxy.client import HIGH_WATER, Origin, UpstreamClient, _Connection, split_url

DEADLINE = 10.0  # seconds for any one test, servers and client included
READ_MAX = 256 * 1024  # asyncio's largest single socket read: what may arrive on top of HIGH_WATER


# --- scripted upstreams ------------------------------------------------------------------------


@dataclass
class Conn:
    """One accepted connection, seen from the upstream's side."""

    number: int  # 1 for the first connection the upstream accepted
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    upstream: Upstream

    async def request(self) -> bytes | None:
        """The next whole request as raw bytes (head and body), or None if the client left first."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lowered = head.lower()
            body = b""
            if length := re.search(rb"\r\ncontent-length: *(\d+)\r\n", lowered):
                body = await self.reader.readexactly(int(length.group(1)))
            elif b"\r\ntransfer-encoding: chunked\r\n" in lowered:
                body = await self.reader.readuntil(b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.upstream.requests.append(head + body)
        return head + body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_for_eof(self) -> bytes:
        """Everything else the client sends, until it closes the connection."""
        with suppress(ConnectionError):
            return await self.reader.read()
        return b""

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Script = Callable[[Conn], Awaitable[None]]


@dataclass
class Upstream:
    """A scripted upstream server: `script` runs once per accepted connection."""

    script: Script
    host: str = "127.0.0.1"
    accepts: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _errors: list[BaseException] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def __aenter__(self) -> Upstream:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        try:
            await self.script(Conn(self.accepts, reader, writer, self))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client dropped the connection: expected in many scenes
        except asyncio.CancelledError:
            pass  # the scene is over (__aexit__); asyncio would log a cancelled handler as an error
        except Exception as exc:  # a broken script must fail the test, not vanish in a task
            self._errors.append(exc)
        finally:
            writer.close()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:  # each closed by its task: drop what is still unsent
            if writer.transport.get_write_buffer_size():  # (an emptied one may be gone already)
                writer.transport.abort()
        await self._server.wait_closed()
        await asyncio.sleep(0.01)  # let the aborted transports release their sockets
        if self._errors and exc_info[0] is None:
            raise self._errors[0]


@asynccontextmanager
async def scene(
    script: Script, *, host: str = "127.0.0.1", **options: Any
) -> AsyncIterator[tuple[Upstream, UpstreamClient]]:
    """A scripted upstream and a client (read_timeout 1 s unless given), both closed afterwards."""
    options.setdefault("read_timeout", 1.0)
    async with asyncio.timeout(DEADLINE), Upstream(script, host) as upstream:
        client = UpstreamClient(**options)
        try:
            yield upstream, client
        finally:
            await client.aclose()
            await asyncio.sleep(0.01)


def reply(body: bytes = b"ok", *headers: str, status: str = "200 OK", version: str = "1.1") -> bytes:
    """A raw answer; a Content-Length is added unless `headers` frame the body some other way."""
    lines = [f"HTTP/{version} {status}", *headers]
    if not any(h.lower().startswith(("content-length:", "transfer-encoding:")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


OK = reply()


def serving(answer: bytes = OK) -> Script:
    """A keep-alive upstream answering every request with `answer`."""

    async def script(conn: Conn) -> None:
        while await conn.request() is not None:
            await conn.send(answer)

    return script


async def get(client: UpstreamClient, url: str, method: str = "GET") -> tuple[int, bytes]:
    """One bodiless exchange: status and whole body; the answer is closed."""
    answer = await client.request(method, url, [])
    try:
        return answer.status, await answer.read()
    finally:
        answer.close()


async def parts(*chunks: bytes, gap: float = 0.0) -> AsyncIterator[bytes]:
    """A request body, chunk by chunk, `gap` seconds apart."""
    for chunk in chunks:
        if gap:
            await asyncio.sleep(gap)
        yield chunk


@contextmanager
def takes(low: float, high: float) -> Iterator[None]:
    """The block runs for at least `low` and at most `high` seconds."""
    started = time.monotonic()
    yield
    elapsed = time.monotonic() - started
    assert low <= elapsed <= high, elapsed


# --- keep-alive and the request as sent ----------------------------------------------------------


@pytest.mark.anyio
async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    async with scene(serving(reply(b"hello"))) as (upstream, client):
        assert await get(client, upstream.url("/a")) == (200, b"hello")
        assert await get(client, upstream.url("/b")) == (200, b"hello")
        assert await get(client, upstream.url("/c"), method="HEAD") == (200, b"")
    assert upstream.accepts == 1
    assert [raw.split(b"\r\n")[0] for raw in upstream.requests] == [
        b"GET /a HTTP/1.1",
        b"GET /b HTTP/1.1",
        b"HEAD /c HTTP/1.1",
    ]


@pytest.mark.anyio
async def test_the_request_is_sent_as_given_with_nothing_but_a_host_header_added() -> None:
    headers = [("X-Trace", "a"), ("x-trace", "b"), ("Cookie", "c=1; d=2"), ("X-Name", "Zoë Ünal")]
    async with scene(serving()) as (upstream, client):
        answer = await client.request("GET", upstream.url("/p/a%2Fb;x?q=1&r=%20#frag"), headers)
        answer.close()
    assert upstream.requests == [
        b"GET /p/a%2Fb;x?q=1&r=%20 HTTP/1.1\r\n"
        + f"host: 127.0.0.1:{upstream.port}\r\n".encode()
        + b"X-Trace: a\r\nx-trace: b\r\nCookie: c=1; d=2\r\n"
        + "X-Name: Zoë Ünal\r\n\r\n".encode()
    ]


@pytest.mark.anyio
async def test_status_and_raw_headers_come_back_in_order_with_repeats() -> None:
    answer_bytes = reply(
        b"{}", "Set-Cookie: a=1", "X-Mixed-Case: Yes", "set-cookie: b=2", status="201 Created"
    )
    async with scene(serving(answer_bytes)) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        body = await answer.read()
        answer.close()
    assert (answer.status, body) == (201, b"{}")
    assert answer.headers == [
        (b"Set-Cookie", b"a=1"),
        (b"X-Mixed-Case", b"Yes"),
        (b"set-cookie", b"b=2"),
        (b"Content-Length", b"2"),
    ]
    assert answer.header(b"set-cookie") == b"a=1"
    assert answer.header(b"x-mixed-case") == b"Yes"
    assert answer.header(b"x-absent") is None


@pytest.mark.parametrize(
    ("answer", "accepts"),
    [
        pytest.param(reply(b"x", "Connection: close"), 2, id="http11-connection-close"),
        pytest.param(reply(b"x", version="1.0"), 2, id="http10"),
        pytest.param(reply(b"x", "Connection: keep-alive", version="1.0"), 1, id="http10-keep-alive"),
    ],
)
@pytest.mark.anyio
async def test_a_connection_the_upstream_will_close_is_not_asked_again(answer: bytes, accepts: int) -> None:
    async with scene(serving(answer)) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"x")
        assert await get(client, upstream.url()) == (200, b"x")
    assert upstream.accepts == accepts


# --- framing of the answer -----------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["Content-Length: 100", "Transfer-Encoding: chunked"])
@pytest.mark.anyio
async def test_a_head_answer_ends_at_its_headers_and_its_connection_is_dropped(framing: str) -> None:
    async with scene(serving(reply(b"", framing))) as (upstream, client):
        with takes(0, 0.5):  # not a read timeout waiting for 100 bytes that never come
            assert await get(client, upstream.url(), method="HEAD") == (200, b"")
        assert await get(client, upstream.url(), method="HEAD") == (200, b"")
    assert upstream.accepts == 2


@pytest.mark.parametrize(
    "answer",
    [reply(b"", status="204 No Content"), reply(b"", "Content-Length: 50", status="304 Not Modified")],
    ids=["204", "304-with-length"],
)
@pytest.mark.anyio
async def test_bodiless_statuses_end_at_their_headers_and_keep_the_connection(answer: bytes) -> None:
    async with scene(serving(answer)) as (upstream, client):
        status, body = await get(client, upstream.url())
        assert body == b""
        assert await get(client, upstream.url()) == (status, b"")
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_interim_answers_are_skipped_and_only_the_final_headers_kept() -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    )
    async with scene(serving(interim + reply(b"final", "X-Final: 1"))) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        assert answer.status == 200
        assert answer.headers == [(b"X-Final", b"1"), (b"Content-Length", b"5")]
        assert await answer.read() == b"final"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"final")
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_an_unasked_switch_of_protocols_is_an_error() -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with scene(serving(switch + b"\x81\x05hello")) as (upstream, client):
        with pytest.raises(UpstreamError):
            await client.request("GET", upstream.url(), [])
        assert upstream.accepts == 1


@pytest.mark.parametrize("version", ["1.1", "1.0"])
@pytest.mark.anyio
async def test_an_answer_framed_by_the_end_of_the_connection_is_read_whole(version: str) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(f"HTTP/{version} 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ".encode())
        await asyncio.sleep(0.1)
        await conn.send(b"and last")
        conn.writer.close()

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"first and last")
        assert await get(client, upstream.url()) == (200, b"first and last")
    assert upstream.accepts == 2


@pytest.mark.parametrize(
    "answer",
    [
        reply(b"0123456789", "Content-Length: 100"),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n8\r\nmid-",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
    ],
    ids=["short-length", "mid-chunk", "no-last-chunk", "no-final-crlf"],
)
@pytest.mark.anyio
async def test_an_answer_cut_short_is_an_error(answer: bytes) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer)
        await asyncio.sleep(0.05)
        conn.writer.close()

    async with scene(script) as (upstream, client):
        answer_ = await client.request("GET", upstream.url(), [])
        assert answer_.status == 200
        with pytest.raises(UpstreamError) as raised:
            await answer_.read()
        answer_.close()
    assert type(raised.value) is UpstreamError  # broken off, not timed out


@pytest.mark.anyio
async def test_an_answer_whose_head_is_cut_short_is_an_error() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Len")
        conn.writer.close()

    async with scene(script) as (upstream, client):
        with pytest.raises(UpstreamError) as raised:
            await client.request("GET", upstream.url(), [])
    assert type(raised.value) is UpstreamError


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
        b"HTTP/1.1 200 OK\r\nFoo : bar\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nFoo: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nFoo: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nFoo: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi",
    ],
    ids=[
        "garbage",
        "ssh",
        "tls",
        "letters-in-status",
        "bare-lf",
        "space-before-colon",
        "obs-fold",
        "nul-in-value",
        "bare-cr-in-value",
        "signed-length",
        "length-list",
    ],
)
@pytest.mark.anyio
async def test_what_is_not_strict_http_is_an_error(answer: bytes) -> None:
    async with scene(serving(answer)) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())
        assert upstream.accepts == 1


@pytest.mark.parametrize(
    "answer",
    [
        reply(b"hi", "Content-Length: 2", "Content-Length: 7"),
        reply(b"hi", "Content-Length: 2", "Content-Length: 2"),
        reply(b"2\r\nhi\r\n0\r\n\r\n", "Content-Length: 2", "Transfer-Encoding: chunked"),
        reply(b"2\r\nhi\r\n0\r\n\r\n", "Transfer-Encoding: chunked", "Content-Length: 2"),
    ],
    ids=["two-lengths", "repeated-length", "length-then-chunked", "chunked-then-length"],
)
@pytest.mark.anyio
async def test_ambiguous_framing_that_could_smuggle_an_answer_is_refused(answer: bytes) -> None:
    async with scene(serving(answer)) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())


@pytest.mark.parametrize("size", [b"zz", b"-1", b"0x2", b"2 ", b"fffffffffffffffffffff", b""])
@pytest.mark.anyio
async def test_bad_chunk_sizes_are_refused(size: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nhi\r\n0\r\n\r\n"
    async with scene(serving(answer)) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())


@pytest.mark.anyio
async def test_a_chunked_answer_is_decoded_and_its_trailers_do_not_end_it_early() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1a\r\n" + b"z" * 26 + b"\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with scene(serving(answer)) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"hello" + b"z" * 26)
        assert await get(client, upstream.url()) == (200, b"hello" + b"z" * 26)
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_an_answer_pipelined_behind_a_complete_one_does_not_leak_into_it() -> None:
    first = reply(b"mine", "X-First: 1")
    smuggled = reply(b"", "X-Smuggled: 1", "Set-Cookie: token=evil", status="404 Not Found")

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(first + smuggled if conn.number == 1 else first)  # one write: one segment
        await serving(first)(conn)

    async with scene(script) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        status, headers = answer.status, list(answer.headers)
        try:
            body = await answer.read()
        except UpstreamError:
            body = None  # refusing the whole exchange would be acceptable too
        answer.close()
        assert await get(client, upstream.url()) == (200, b"mine")
    assert status == 200
    assert headers == [(b"X-First", b"1"), (b"Content-Length", b"4")]
    assert body in (b"mine", None)
    assert upstream.accepts == 2  # the connection that talked out of turn was dropped


# --- header injection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", [("X-Group", "admins\r\nX-Role: admin")]),
        ("GET", [("X-Group", "admins\nX-Role: admin")]),
        ("GET", [("X-Group", "admins\rX-Role: admin")]),
        ("GET", [("X-Group", "admins\0")]),
        ("GET", [("X-Group\r\nX-Role", "admin")]),
        ("GET", [("X-Gr\0oup", "admin")]),
        ("GET", [("X-Ok", "fine"), ("X-Group", "a\r\n\r\nGET /admin HTTP/1.1")]),
        ("GET /admin HTTP/1.1\r\nX:", []),
    ],
    ids=[
        "crlf-value",
        "lf-value",
        "cr-value",
        "nul-value",
        "crlf-name",
        "nul-name",
        "smuggled-request",
        "method",
    ],
)
@pytest.mark.anyio
async def test_a_header_that_could_split_the_request_is_refused_before_anything_is_sent(
    method: str, headers: list[tuple[str, str]]
) -> None:
    async with scene(serving()) as (upstream, client):
        with pytest.raises(UpstreamError):
            await client.request(method, upstream.url("/ok"), headers)
        await asyncio.sleep(0.05)
    assert upstream.accepts == 0
    assert upstream.requests == []


@pytest.mark.anyio
async def test_a_header_injection_on_a_pooled_connection_writes_nothing_on_it() -> None:
    async with scene(serving()) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(UpstreamError):
            await client.request("GET", upstream.url(), [("X-Group", "a\r\nX-Role: admin")])
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.accepts == 1
    assert len(upstream.requests) == 2
    assert all(b"X-Role" not in raw for raw in upstream.requests)


# --- broken pooled connections and the single retry ---------------------------------------------


@pytest.mark.anyio
async def test_a_pooled_connection_the_upstream_closed_while_idle_is_replaced() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply())
        if conn.number == 1:
            conn.writer.close()  # the upstream's own idle timeout, say
            return
        await serving()(conn)

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        await asyncio.sleep(0.1)
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.accepts == 2


@pytest.mark.parametrize("how", ["close", "reset"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
@pytest.mark.anyio
async def test_an_idempotent_request_whose_reused_connection_breaks_unanswered_is_retried_once(
    how: str, method: str
) -> None:
    async def script(conn: Conn) -> None:
        if conn.number == 1:
            await conn.request()
            await conn.send(reply())
            await conn.request()  # the second request arrives...
            conn.reset() if how == "reset" else conn.writer.close()  # ...and is never answered
            return
        await serving()(conn)

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url("/first")) == (200, b"ok")
        status, _ = await get(client, upstream.url("/again"), method=method)
    assert status == 200
    assert upstream.accepts == 2
    assert [raw.split(b"\r\n")[0] for raw in upstream.requests] == [
        b"GET /first HTTP/1.1",
        f"{method} /again HTTP/1.1".encode(),
        f"{method} /again HTTP/1.1".encode(),
    ]


@pytest.mark.anyio
async def test_the_retry_happens_only_once() -> None:
    async def script(conn: Conn) -> None:
        if conn.number == 1:
            await conn.request()
            await conn.send(reply())
        await conn.request()
        conn.writer.close()

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())
        assert upstream.accepts == 2


@pytest.mark.anyio
async def test_a_request_on_a_fresh_connection_that_breaks_unanswered_is_not_retried() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        conn.writer.close()

    async with scene(script) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())
        await asyncio.sleep(0.05)
        assert upstream.accepts == 1


@pytest.mark.parametrize(
    ("method", "body", "length"),
    [
        ("POST", [b"payload"], 7),
        ("POST", None, None),
        ("PATCH", None, None),
        ("PUT", [b"payload"], 7),
        ("DELETE", [b"payload"], 7),
    ],
    ids=["post-with-body", "post-without-body", "patch-without-body", "put-with-body", "delete-with-body"],
)
@pytest.mark.anyio
async def test_a_request_not_safe_to_repeat_is_not_retried(
    method: str, body: list[bytes] | None, length: int | None
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply())
        await conn.request()  # taken in, perhaps acted upon, never answered
        conn.writer.close()

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(UpstreamError):
            await client.request(
                method, upstream.url(), [], None if body is None else parts(*body), length=length
            )
        await asyncio.sleep(0.05)
        assert upstream.accepts == 1
        assert len(upstream.requests) == 2


@pytest.mark.anyio
async def test_a_reused_connection_that_broke_mid_answer_is_not_retried() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply())
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-")  # part of an answer: it was acted upon
        conn.writer.close()

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())
        await asyncio.sleep(0.05)
        assert upstream.accepts == 1


# --- timeouts and refused connections ------------------------------------------------------------


@pytest.mark.anyio
async def test_an_upstream_that_never_answers_times_out_after_the_read_timeout() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.wait_for_eof()

    async with scene(script, read_timeout=0.3) as (upstream, client):
        with takes(0.25, 1.0), pytest.raises(UpstreamTimeoutError):
            await client.request("GET", upstream.url(), [])
        assert upstream.accepts == 1  # a timeout is not retried


@pytest.mark.anyio
async def test_a_timeout_on_a_reused_connection_is_not_retried() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply())
        await conn.request()
        await conn.wait_for_eof()

    async with scene(script, read_timeout=0.3) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with takes(0.25, 0.55), pytest.raises(UpstreamTimeoutError):
            await client.request("GET", upstream.url(), [])
        await asyncio.sleep(0.05)
        assert upstream.accepts == 1
        assert len(upstream.requests) == 2


@pytest.mark.anyio
async def test_a_body_that_stalls_midway_times_out() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"0123456789", "Content-Length: 100"))
        await conn.wait_for_eof()

    async with scene(script, read_timeout=0.3) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        received: list[bytes] = []

        async def drain() -> None:
            async for chunk in answer.chunks():
                received.append(chunk)

        with takes(0.25, 1.0), pytest.raises(UpstreamTimeoutError):
            await drain()
        answer.close()
    assert b"".join(received) == b"0123456789"


@pytest.mark.anyio
async def test_a_trickling_body_does_not_time_out_while_bytes_keep_coming() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"", "Content-Length: 8"))
        for byte in b"trickled":
            await asyncio.sleep(0.1)
            await conn.send(bytes([byte]))
        await serving()(conn)

    async with scene(script, read_timeout=0.3) as (upstream, client):
        with takes(0.7, 3.0):
            assert await get(client, upstream.url()) == (200, b"trickled")


@pytest.mark.anyio
async def test_a_stall_after_a_trickle_times_out_one_read_timeout_after_the_last_byte() -> None:
    """Each wait has its own `read_timeout`, though the connection keeps one timer for them all:
    counted from the first wait it would end at 0.3 s, and a timer never set again would not end
    it at all."""

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"", "Content-Length: 8"))
        for byte in b"tric":
            await asyncio.sleep(0.1)
            await conn.send(bytes([byte]))
        await conn.wait_for_eof()

    async with scene(script, read_timeout=0.3) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        received: list[bytes] = []

        async def drain() -> None:
            async for chunk in answer.chunks():
                received.append(chunk)

        with takes(0.5, 1.5), pytest.raises(UpstreamTimeoutError):  # from the first wait: 0.3
            await drain()
        answer.close()
    assert b"".join(received) == b"tric"


@pytest.mark.anyio
async def test_overlapping_waits_on_one_connection_are_each_timed() -> None:
    """An upload's wait for the socket and the early answer's wait for its next bytes can overlap
    on one connection: the end of the first must not leave the second untimed."""
    connection = _Connection(UpstreamClient(read_timeout=0.3), split_url("http://127.0.0.1:9/")[0])
    loop = asyncio.get_running_loop()
    socket_ready, next_bytes = loop.create_future(), loop.create_future()
    async with asyncio.timeout(DEADLINE):
        upload = asyncio.ensure_future(connection._wait(socket_ready, "take the request body"))
        await asyncio.sleep(0.1)
        answer = asyncio.ensure_future(connection._wait(next_bytes, "answer"))
        await asyncio.sleep(0.05)
        socket_ready.set_result(None)
        await upload
        with takes(0.15, 1.0), pytest.raises(UpstreamTimeoutError, match="did not answer in time"):
            await answer  # 0.3 s after it began, 0.25 s from here
    assert connection.closed


def test_a_read_timeout_rings_once_not_until_the_clock_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop keeps time in whole milliseconds: a timer set again for a due time it already
    reached, by a float's error, is set for no delay and rings at once, again and again, until the
    clock ticks (hundreds of rings, a millisecond of CPU, for about a fifth of all timeouts)."""
    rings = 0
    ring = _Connection._ring

    def counted(self: _Connection) -> None:
        nonlocal rings
        rings += 1
        ring(self)

    monkeypatch.setattr(_Connection, "_ring", counted)

    async def scenario() -> None:
        origin = split_url("http://127.0.0.1:9/")[0]
        for timeout in (0.011, 0.013, 0.017, 0.019, 0.023, 0.029, 0.031, 0.037, 0.041, 0.043):
            connection = _Connection(UpstreamClient(read_timeout=timeout), origin)
            with pytest.raises(UpstreamTimeoutError):
                await connection._wait(asyncio.get_running_loop().create_future(), "answer")

    uvloop.run(scenario())
    assert rings <= 2 * 10


@pytest.mark.anyio
async def test_a_closed_port_is_an_upstream_error_not_a_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing listens there
    client = UpstreamClient(read_timeout=1, connect_timeout=1)
    async with asyncio.timeout(DEADLINE):
        with takes(0, 0.5), pytest.raises(UpstreamError) as raised:
            await client.request("GET", f"http://127.0.0.1:{port}/", [])
        await client.aclose()
    assert not isinstance(raised.value, UpstreamTimeoutError)


@pytest.mark.anyio
async def test_a_connection_never_accepted_times_out_after_the_connect_timeout() -> None:
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: once its queue is full, further handshakes go unanswered
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        await asyncio.sleep(0.1)
        client = UpstreamClient(read_timeout=5, connect_timeout=0.3)
        async with asyncio.timeout(DEADLINE):
            with takes(0.25, 1.5), pytest.raises(UpstreamTimeoutError):
                await client.request("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/", [])
            await client.aclose()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --- request bodies -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_body_of_declared_length_is_sent_byte_exact() -> None:
    payload = bytes(range(256)) * 4 + b"\r\n\r\n0\r\n\r\n"
    pieces = [payload[:1], payload[1:500], payload[500:]]
    async with scene(serving()) as (upstream, client):
        headers = [("Content-Type", "application/octet-stream")]
        answer = await client.request(
            "PUT", upstream.url("/up"), headers, parts(*pieces, gap=0.01), length=len(payload)
        )
        assert await answer.read() == b"ok"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.requests[0] == (
        f"PUT /up HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n"
        f"Content-Type: application/octet-stream\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    assert upstream.accepts == 1  # a fully sent body leaves the connection reusable


@pytest.mark.anyio
async def test_a_whole_body_is_sent_byte_exact_and_its_connection_reused() -> None:
    payload = b'{"model": "m", "messages": []}\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n'
    async with scene(serving()) as (upstream, client):
        answer = await client.request("POST", upstream.url("/v1/chat"), [], payload)
        assert await answer.read() == b"ok"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.requests[0] == (
        f"POST /v1/chat HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n"
        f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_a_request_with_a_whole_body_is_not_retried() -> None:
    """Even for PUT: the upstream may have acted on the body before the connection broke."""

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply())
        await conn.request()
        conn.writer.close()

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(UpstreamError):
            await client.request("PUT", upstream.url(), [], b"payload")
        await asyncio.sleep(0.05)
        assert upstream.accepts == 1


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding"])
@pytest.mark.anyio
async def test_framing_headers_from_the_caller_are_refused_before_anything_is_sent(name: str) -> None:
    """Framing is the client's alone: a length passed in could disagree with the body it sends."""
    async with scene(serving()) as (upstream, client):
        with pytest.raises(UpstreamError):
            await client.request("POST", upstream.url(), [(name, "5")], b"x" * 50)
    assert upstream.accepts == 0


@pytest.mark.parametrize(
    ("pieces", "length"),
    [([b"12345", b"67890"], 7), ([b"1234"], 7), ([b"12", b"34"], 7), ([b"123456789"], 7)],
)
@pytest.mark.anyio
async def test_a_streamed_body_is_held_to_its_declared_length(pieces: list[bytes], length: int) -> None:
    """Bytes past the length would be read upstream as the next request; too few leave it waiting."""
    received: list[bytes] = []

    async def script(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        received.append(await conn.wait_for_eof())  # the client drops the connection

    async with scene(script) as (upstream, client):
        with pytest.raises(UpstreamError, match="declared length"):
            await client.request("POST", upstream.url(), [], parts(*pieces), length=length)
        await asyncio.sleep(0.05)
    assert all(len(body) <= length for body in received)
    assert upstream.accepts == len(received)  # every connection that took part of it was closed


@pytest.mark.anyio
async def test_a_response_head_over_the_limit_in_one_read_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
    answer = head + b"Content-Length: 2\r\n\r\nok"
    assert len(answer) < READ_MAX  # one read can carry all of it

    async def script(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(answer)
        await conn.writer.drain()
        await conn.wait_for_eof()

    async with scene(script) as (upstream, client):
        with pytest.raises(UpstreamError, match="head"):
            await get(client, upstream.url())


@pytest.mark.parametrize(
    "announced", ["Content-Length: 6", "Transfer-Encoding: chunked"], ids=["length", "chunked"]
)
@pytest.mark.anyio
async def test_a_204_announcing_a_body_does_not_leave_its_connection_to_the_next_request(
    announced: str,
) -> None:
    """A body a 204 must not have may still come, and would be read as the next user's answer."""

    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"", announced, status="204 No Content"))
        await asyncio.sleep(0.1)
        with suppress(ConnectionError):
            await conn.send(reply(b"STALE!"))  # late: after the exchange, on a connection kept or not
        await conn.request()
        await conn.send(reply(b"STALE!"))

    async with scene(script) as (upstream, client):
        assert await get(client, upstream.url()) == (204, b"")
        await asyncio.sleep(0.05)
        with suppress(UpstreamError):
            assert (await get(client, upstream.url()))[1] != b"STALE!"
    assert upstream.accepts == 2


@pytest.mark.parametrize("coding", ["gzip", "chunked, gzip", "identity"])
@pytest.mark.anyio
async def test_an_answer_with_a_transfer_coding_other_than_chunked_is_refused(coding: str) -> None:
    """Its coding would be lost with the hop-by-hop header: the client would get undecodable bytes."""
    async with scene(serving(reply(b"x" * 10, f"Transfer-Encoding: {coding}", version="1.1"))) as (
        upstream,
        client,
    ):
        with takes(0, 0.5), pytest.raises(UpstreamError, match="transfer coding"):
            await get(client, upstream.url())  # at once, not after waiting for a body end never coming


@pytest.mark.anyio
async def test_a_chunked_body_is_framed_and_its_empty_chunks_skipped() -> None:
    async with scene(serving()) as (upstream, client):
        body = parts(b"", b"ab", b"", b"z" * 26, b"", b"!")
        answer = await client.request("POST", upstream.url("/c"), [("X-A", "1")], body)
        assert await answer.read() == b"ok"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.requests[0] == (
        f"POST /c HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\nX-A: 1\r\ntransfer-encoding: chunked\r\n\r\n"
        "2\r\nab\r\n1a\r\n".encode()
        + b"z" * 26
        + b"\r\n1\r\n!\r\n0\r\n\r\n"
    )
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_an_empty_chunked_body_is_just_the_last_chunk() -> None:
    async with scene(serving()) as (upstream, client):
        answer = await client.request("POST", upstream.url(), [], parts(b"", b""))
        assert await answer.read() == b"ok"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")
    head = f"POST / HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\ntransfer-encoding: chunked\r\n\r\n"
    assert upstream.requests == [
        head.encode() + b"0\r\n\r\n",
        f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n\r\n".encode(),  # nothing left over
    ]
    assert upstream.accepts == 1


@pytest.mark.parametrize(
    ("method", "framing"),
    [
        ("POST", b"content-length: 0\r\n"),
        ("PUT", b"content-length: 0\r\n"),
        ("PATCH", b"content-length: 0\r\n"),
        ("GET", b""),
        ("DELETE", b""),
        ("OPTIONS", b""),
    ],
)
@pytest.mark.anyio
async def test_only_bodiless_posts_puts_and_patches_declare_a_zero_length(
    method: str, framing: bytes
) -> None:
    async with scene(serving()) as (upstream, client):
        assert await get(client, upstream.url("/x"), method=method) == (200, b"ok")
    assert upstream.requests == [
        f"{method} /x HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n".encode() + framing + b"\r\n"
    ]


@pytest.mark.anyio
async def test_an_early_answer_comes_back_while_the_body_is_still_streaming() -> None:
    async def script(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await conn.send(reply(b"too big", "Connection: close", status="413 Content Too Large"))
        await conn.wait_for_eof()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    async with scene(script) as (upstream, client):
        answer = await client.request("POST", upstream.url(), [], endless(), length=100000000)
        assert (answer.status, await answer.read()) == (413, b"too big")
        answer.close()
        assert await get(client, upstream.url()) == (413, b"too big")
    assert upstream.accepts == 2


@pytest.mark.anyio
async def test_a_large_request_body_waits_for_a_slow_upstream() -> None:
    total, piece = 32 * 1024 * 1024, 64 * 1024
    produced = 0
    upstream_ready = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(total // piece):
            produced += piece
            yield b"b" * piece

    async def script(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await upstream_ready.wait()  # reads nothing of the body for now
        received = 0
        while received < total:
            received += len(await conn.reader.read(1024 * 1024))
        await conn.send(reply(str(received).encode()))

    async with scene(script, read_timeout=5) as (upstream, client):
        sending = asyncio.ensure_future(client.request("POST", upstream.url(), [], body(), length=total))
        await asyncio.sleep(0.3)
        stalled_at = produced
        upstream_ready.set()
        answer = await sending
        assert await answer.read() == str(total).encode()
        answer.close()
    assert stalled_at < total // 2  # bounded by socket buffers, not the whole body held in memory


@pytest.mark.parametrize("after", [0, 1, 2], ids=["before-any-chunk", "after-a-chunk", "after-two-chunks"])
@pytest.mark.anyio
async def test_an_exception_from_the_request_body_propagates_unchanged(after: int) -> None:
    class ClientLeftError(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        for _ in range(after):
            yield b"abc"
            await asyncio.sleep(0.05)
        raise ClientLeftError("gone")

    async with scene(serving()) as (upstream, client):
        assert await get(client, upstream.url()) == (200, b"ok")
        with pytest.raises(ClientLeftError, match="gone"):
            await client.request("POST", upstream.url(), [], body(), length=10)
        assert await get(client, upstream.url()) == (200, b"ok")
    # Had the half-sent POST's connection been reused, the GET would have been read as its body.
    get_bytes = f"GET / HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n\r\n".encode()
    assert upstream.requests == [get_bytes, get_bytes]
    if after:
        assert upstream.accepts == 2  # part of the POST went out: that connection was dropped


# --- large and slow answers -----------------------------------------------------------------------


@pytest.mark.parametrize("gap", [0.0, 0.02], ids=["read-at-once", "read-slowly"])
@pytest.mark.anyio
async def test_a_large_answer_arrives_intact_in_bounded_chunks(gap: float) -> None:
    payload = random.Random(7).randbytes(2 * 1024 * 1024)
    async with scene(serving(reply(payload)), read_timeout=2) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        received = []
        async for chunk in answer.chunks():
            received.append(chunk)
            if gap:
                await asyncio.sleep(gap)
        answer.close()
        assert await get(client, upstream.url()) == (200, payload)
    assert b"".join(received) == payload
    assert max(map(len, received)) <= HIGH_WATER + READ_MAX
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_an_unread_answer_makes_the_upstream_wait() -> None:
    total = 64 * 1024 * 1024
    sent = 0

    async def script(conn: Conn) -> None:
        nonlocal sent
        await conn.request()
        await conn.send(reply(b"", f"Content-Length: {total}"))
        block = b"s" * (1024 * 1024)
        while sent < total:
            await conn.send(block)
            sent += len(block)

    async with scene(script, read_timeout=5) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        await asyncio.sleep(0.3)
        sent_while_unread = sent
        received = 0
        async for chunk in answer.chunks():
            received += len(chunk)
        answer.close()
    assert sent_while_unread < total // 4  # socket buffers and 64 KiB, not the whole answer
    assert received == total


@pytest.mark.anyio
async def test_a_connection_whose_request_body_failed_after_the_answer_is_not_pooled() -> None:
    class ClientLeftError(Exception):
        pass

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"
        await asyncio.sleep(0.1)
        raise ClientLeftError  # after the upstream answered: nobody is waiting for the head any more

    async def script(conn: Conn) -> None:
        await conn.reader.readuntil(b"\r\n\r\n")
        await conn.send(reply(b"early"))  # keep-alive, without waiting for the body
        await conn.wait_for_eof()

    async with scene(script, read_timeout=0.5) as (upstream, client):
        answer = await client.request("POST", upstream.url(), [], body(), length=30)
        assert await answer.read() == b"early"
        await asyncio.sleep(0.3)
        answer.close()
        assert await get(client, upstream.url()) == (200, b"early")
    assert upstream.accepts == 2


@pytest.mark.anyio
async def test_buffered_hands_over_what_already_arrived_without_waiting() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"", "Content-Length: 10") + b"hello")  # one write: with the head
        await asyncio.sleep(0.1)
        await conn.send(b"world")
        await serving()(conn)

    async with scene(script) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        assert answer.buffered() == b"hello"
        assert answer.buffered() == b""  # taken, and nothing more yet
        assert await answer.read() == b"world"
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")
    assert upstream.accepts == 1


@pytest.mark.anyio
async def test_buffered_resumes_reading_after_backpressure_paused_it() -> None:
    payload = random.Random(3).randbytes(1024 * 1024)
    async with scene(serving(reply(payload))) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        await asyncio.sleep(0.2)  # enough for reading to fill up to HIGH_WATER and pause
        first = answer.buffered()
        rest = await answer.read()
        answer.close()
    assert HIGH_WATER <= len(first) <= HIGH_WATER + READ_MAX
    assert first + rest == payload


# --- what is pooled ------------------------------------------------------------------------------


@pytest.mark.parametrize("held", [0.0, 0.2], ids=["connection-idle", "answer-still-open"])
@pytest.mark.anyio
async def test_bytes_the_upstream_sends_out_of_turn_keep_its_connection_out_of_the_pool(held: float) -> None:
    async def script(conn: Conn) -> None:
        if conn.number == 1:
            await conn.request()
            await conn.send(reply())
            await asyncio.sleep(0.05)
            await conn.send(reply(b"unasked"))  # nobody asked: not to be taken as the next answer
            await conn.wait_for_eof()
            return
        await serving(reply(b"fresh"))(conn)

    async with scene(script) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        assert await answer.read() == b"ok"
        await asyncio.sleep(held)
        answer.close()
        await asyncio.sleep(0.2 - held)
        assert await get(client, upstream.url()) == (200, b"fresh")
    assert upstream.accepts == 2


@pytest.mark.anyio
async def test_closing_an_unfinished_answer_drops_its_connection() -> None:
    async with scene(serving(reply(b"0123456789", "Content-Length: 1000"))) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        assert answer.status == 200
        answer.close()
        answer.close()  # idempotent
        answer2 = await client.request("GET", upstream.url(), [])
        assert answer2.status == 200
        answer2.close()
    assert upstream.accepts == 2


@pytest.mark.anyio
async def test_close_is_idempotent_and_pools_a_finished_connection_once() -> None:
    async with scene(serving(reply(b"x"))) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        assert await answer.read() == b"x"
        answer.close()
        answer.close()
        first, second = await asyncio.gather(get(client, upstream.url()), get(client, upstream.url()))
        assert first == second == (200, b"x")
    assert upstream.accepts == 2  # one pooled connection, handed to one of the two requests only


@pytest.mark.anyio
async def test_concurrent_requests_each_get_their_own_connection() -> None:
    async def script(conn: Conn) -> None:
        while (raw := await conn.request()) is not None:
            await asyncio.sleep(0.1)
            await conn.send(reply(raw.split(b" ")[1]))

    async with scene(script) as (upstream, client):
        results = await asyncio.gather(*(get(client, upstream.url(f"/{i}")) for i in range(5)))
    assert results == [(200, f"/{i}".encode()) for i in range(5)]
    assert upstream.accepts == 5


@pytest.mark.anyio
async def test_at_most_max_idle_connections_are_kept_per_origin() -> None:
    async def script(conn: Conn) -> None:
        while await conn.request() is not None:
            await asyncio.sleep(0.05)
            await conn.send(reply())

    async with scene(script, max_idle=1) as (upstream, client):
        await asyncio.gather(get(client, upstream.url()), get(client, upstream.url()))
        await asyncio.gather(get(client, upstream.url()), get(client, upstream.url()))
    assert upstream.accepts == 3


@pytest.mark.anyio
async def test_idle_connections_expire_after_the_idle_timeout() -> None:
    async with scene(serving(), idle_timeout=0.1) as (upstream, client):
        await get(client, upstream.url())
        await get(client, upstream.url())
        assert upstream.accepts == 1
        await asyncio.sleep(0.2)
        await get(client, upstream.url())
    assert upstream.accepts == 2


@pytest.mark.anyio
async def test_aclose_closes_the_idle_connections() -> None:
    closed = asyncio.Event()

    async def script(conn: Conn) -> None:
        await serving()(conn)
        closed.set()

    async with scene(script) as (upstream, client):
        await get(client, upstream.url())
        await client.aclose()
        async with asyncio.timeout(1):
            await closed.wait()


# --- origins -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "origin", "target"),
    [
        ("http://example.com", Origin("http", "example.com", 80, "example.com"), "/"),
        ("https://example.com/a?b=1#c", Origin("https", "example.com", 443, "example.com"), "/a?b=1"),
        ("https://Example.COM:8443/", Origin("https", "example.com", 8443, "Example.COM:8443"), "/"),
        ("http://[::1]:8080/v1/x", Origin("http", "::1", 8080, "[::1]:8080"), "/v1/x"),
        ("http://[::1]/", Origin("http", "::1", 80, "[::1]"), "/"),
        ("http://user:pw@host:81/p", Origin("http", "host", 81, "host:81"), "/p"),
        ("http://h/?", Origin("http", "h", 80, "h"), "/"),
        ("http://h/a%2F..%2Fb;p?q=%00", Origin("http", "h", 80, "h"), "/a%2F..%2Fb;p?q=%00"),
    ],
)
def test_split_url_gives_the_origin_and_the_target_as_written(url: str, origin: Origin, target: str) -> None:
    assert split_url(url) == (origin, target)


@pytest.mark.parametrize("url", ["/relative", "ftp://h/", "http:///path", "unix:/tmp/s", "http://h:99999/"])
def test_split_url_refuses_what_is_not_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the cause
        split_url(url)


@pytest.mark.anyio
async def test_an_ipv6_upstream_gets_a_bracketed_host_header() -> None:
    try:
        async with scene(serving(), host="::1") as (upstream, client):
            assert await get(client, upstream.url("/six")) == (200, b"ok")
    except OSError as exc:  # pragma: no cover - a machine without IPv6 loopback
        pytest.skip(f"no IPv6 loopback: {exc}")
    assert upstream.requests == [f"GET /six HTTP/1.1\r\nhost: [::1]:{upstream.port}\r\n\r\n".encode()]


@pytest.mark.anyio
async def test_an_https_upstream_with_an_untrusted_certificate_is_refused() -> None:
    authority = trustme.CA()  # not among the system's trusted authorities
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    handshakes = 0

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        writer.close()

    async with asyncio.timeout(DEADLINE):
        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(read_timeout=1, connect_timeout=2)
        try:
            with pytest.raises(UpstreamError) as raised:
                await client.request("GET", f"https://127.0.0.1:{port}/", [])
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)
    assert not isinstance(raised.value, UpstreamTimeoutError)
    assert "SSL" in str(raised.value) or "Certificate" in str(raised.value)
    assert handshakes == 0  # the server's handshake never completed: nothing was sent in clear


@pytest.mark.anyio
async def test_an_https_upstream_trusted_through_ssl_cert_file_is_reached_and_its_name_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private CA goes in SSL_CERT_FILE (OpenSSL's default paths); the host name is still verified."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)  # not 127.0.0.1

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply(b"secret"))
            await writer.drain()
        writer.close()

    async with asyncio.timeout(DEADLINE):
        server = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(read_timeout=2, connect_timeout=2)
        try:
            answer = await client.request("GET", f"https://localhost:{port}/", [])
            assert (answer.status, await answer.read()) == (200, b"secret")
            answer.close()
            with pytest.raises(UpstreamError):  # the certificate names localhost, not 127.0.0.1
                await client.request("GET", f"https://127.0.0.1:{port}/", [])
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_an_https_url_to_a_plain_http_upstream_is_an_error() -> None:
    async def script(conn: Conn) -> None:
        await conn.send(reply(b"plain"))

    async with scene(script, connect_timeout=2) as (upstream, client):
        with pytest.raises(UpstreamError) as raised:
            await client.request("GET", upstream.url().replace("http://", "https://"), [])
    assert not isinstance(raised.value, UpstreamTimeoutError)


# --- defects found while writing these tests ----------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_is_not_pooled_when_the_answer_came_before_the_whole_request_body() -> None:
    taken_as_body: list[bytes] = []

    async def script(conn: Conn) -> None:
        if conn.number == 1:
            await conn.reader.readuntil(b"\r\n\r\n")
            await conn.send(reply(b"early"))  # answers at once, keep-alive
            taken_as_body.append(await conn.reader.readexactly(30))  # the declared body
        await serving()(conn)

    async with scene(script, read_timeout=0.5) as (upstream, client):
        body = parts(b"a" * 10, b"b" * 10, b"c" * 10, gap=0.1)
        answer = await client.request("POST", upstream.url(), [], body, length=30)
        assert await answer.read() == b"early"
        await asyncio.sleep(0.4)  # the body's next chunk came after the answer: the rest is not sent
        answer.close()
        await get(client, upstream.url("/next"))
    # Either the whole body went out before reuse, or the connection was dropped; observed: the bytes
    # the upstream still expected were taken from the next request's head.
    assert taken_as_body in ([], [b"a" * 10 + b"b" * 10 + b"c" * 10]), taken_as_body
    assert upstream.requests[-1] == f"GET /next HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n\r\n".encode()


@pytest.mark.anyio
async def test_a_connection_pooled_after_an_unread_large_answer_still_reads() -> None:
    size = HIGH_WATER + 6 * 1024

    async def script(conn: Conn) -> None:
        if conn.number == 1:
            await conn.request()
            await conn.send(reply(b"", f"Content-Length: {size}") + b"a" * (HIGH_WATER - 4096))
            await asyncio.sleep(0.1)
            await conn.send(b"a" * 10240)  # the end arrives with the buffer over HIGH_WATER: reading pauses
        await serving()(conn)

    async with scene(script, read_timeout=0.5) as (upstream, client):
        answer = await client.request("GET", upstream.url(), [])
        await asyncio.sleep(0.3)  # the whole answer is in; the caller reads none of it (client gone)
        answer.close()
        assert await get(client, upstream.url()) == (200, b"ok")


@pytest.mark.anyio
async def test_closing_an_answer_twice_does_not_disturb_the_next_exchange_on_its_connection() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply(b"first"))
        await conn.request()
        await conn.send(reply(b"", "Content-Length: 6") + b"sec")
        await asyncio.sleep(0.2)
        await conn.send(b"ond")
        await serving()(conn)

    async with scene(script) as (upstream, client):
        first = await client.request("GET", upstream.url(), [])
        await first.read()
        first.close()
        second = await client.request("GET", upstream.url(), [])  # the same, pooled connection
        first.close()  # "idempotent": must not touch the connection now serving `second`
        assert await second.read() == b"second"
        second.close()


@pytest.mark.anyio
async def test_a_slow_request_body_does_not_count_against_the_read_timeout() -> None:
    async with scene(serving(), read_timeout=0.3) as (upstream, client):
        body = parts(*[b"x" * 10] * 6, gap=0.1)  # 0.6 s of upload, each gap well under the timeout
        answer = await client.request("POST", upstream.url(), [], body, length=60)
        assert await answer.read() == b"ok"
        answer.close()


@pytest.mark.anyio
async def test_an_oversized_response_head_is_refused() -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        for _ in range(8 * 1024):  # 8 MiB of headers
            conn.writer.write(line)
        await conn.send(b"Content-Length: 0\r\n\r\n")

    async with scene(script) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())


@pytest.mark.parametrize("status", ["000", "099", "600", "999"])
@pytest.mark.anyio
async def test_a_status_outside_the_valid_range_is_an_error(status: str) -> None:
    async with scene(serving(reply(b"", status=f"{status} Odd"))) as (upstream, client):
        with pytest.raises(UpstreamError):
            await get(client, upstream.url())
