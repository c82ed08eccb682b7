"""The upstream HTTP/1.1 client: pooled keep-alive connections, responses parsed by llhttp (httptools).

Why not a general-purpose client. Per proxied request aiohttp's client cost about 115 µs of CPU and
httpx's about 400 µs: more than the upstream itself (bench/proxy.py). A reverse proxy needs a narrow
slice of a client: send one request as given, hand back the status, the raw headers and the body
chunk by chunk. The security-sensitive part, parsing what an upstream answers (framing, chunked
encoding, header syntax), is llhttp's, through httptools: the parser uvicorn uses for requests, in
its strict mode. What is written here is the connection handling around it:

- one request at a time per connection; a connection is pooled again only after a complete
  response that allows keep-alive (`should_keep_alive`) and a fully sent request body;
- idle connections are dropped when the upstream closes them or after `idle_timeout`; a request that
  failed on a reused connection before any answer arrived, and has no body, is retried once on a new
  one (the upstream may have closed it at that very moment: RFC 9112 §9.3.1);
- a HEAD answer ends at its headers, and that connection is not reused (llhttp would wait for the
  body its Content-Length announces); 1xx interim answers are skipped; an answer framed by the end
  of the connection ends there, any other answer cut short is an error;
- request header names and values are checked for CR, LF and NUL before anything is written, so no
  value (a group name, say) can split the request;
- backpressure both ways: reading from the upstream pauses while 64 KiB wait for the client, and the
  request body waits while the upstream's socket buffer is full;
- timeouts: `connect_timeout` to open a connection, `read_timeout` for each wait for the upstream.

Nothing here follows redirects, keeps cookies, decompresses or reads proxy settings from the
environment. Errors are `UpstreamError` (refused, reset, malformed) and `UpstreamTimeoutError`.

One module, past the ~300-line guidance: the connection, the pool and the request framing share the
one invariant that matters (a connection is reused only after a complete, fully framed exchange),
which is easier to check when it is all in one place.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

from wardgate.errors import UpstreamError, UpstreamTimeoutError

HIGH_WATER = 64 * 1024  # bytes buffered from the upstream before reading pauses
MAX_HEAD = 64 * 1024  # bytes of status line and headers accepted from an upstream
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # sent with Content-Length: 0 when bodiless
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 §9.2.2: safe to retry


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection goes: scheme, host and port, plus the Host header for it."""

    scheme: str
    host: str
    port: int
    host_header: str


@lru_cache(maxsize=64)
def split_url(url: str) -> tuple[Origin, str]:
    """An absolute http(s) URL as its origin and its request target (path and query)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    origin = Origin(parts.scheme, parts.hostname, port, parts.netloc.rpartition("@")[2])
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return origin, target


def request_head(method: str, target: str, origin: Origin, headers: list[tuple[str, str]]) -> bytes:
    """The request line and headers, refused (ValueError) if any part could split the request."""
    start = f"{method} {target} HTTP/1.1\r\n"  # the target's bytes as received: Latin-1 round-trips them
    lines = [f"host: {origin.host_header}"] + [f"{name}: {value}" for name, value in headers]
    fields = "\r\n".join(lines) + "\r\n\r\n"  # values as received too: UTF-8
    # Exactly one CR LF per line plus the blank one: any CR or LF inside a part shows in the counts.
    separators = len(lines) + 2
    head = start + fields
    if head.count("\r") != separators or head.count("\n") != separators or "\0" in head:
        raise ValueError("a request header contains CR, LF or NUL")
    return start.encode("latin-1") + fields.encode("utf-8")


CLOCK_TICK = 0.001  # seconds: uvloop keeps time in whole milliseconds, and rounds a timer's delay to one
"""A timer that rings within a tick of its due time is on time: set again for the rest, it would be
set for a delay uvloop rounds to nothing, and ring again at once until the clock ticks."""


class _Connection(asyncio.Protocol):
    """One connection to an upstream, carrying one exchange at a time."""

    def __init__(self, client: UpstreamClient, origin: Origin) -> None:
        self._client = client
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._write_ready: asyncio.Future[None] | None = None  # set while the socket buffer is full
        self._paused = False
        # The read timeout: one timer for the connection's waits, set again when it rings early,
        # not one per wait (a stream waits once a chunk, and a timer made and cancelled each time
        # cost a fifth of relaying the chunk; a small request, 1.7 µs of its 120).
        self._silence: asyncio.TimerHandle | None = None
        self._awaited: dict[asyncio.Future[None], tuple[str, float]] = {}  # what for, since (loop time)
        self._reset(is_head=False)
        self.active = False

    def _reset(self, *, is_head: bool) -> None:
        if self._paused and self._transport is not None:
            self._transport.resume_reading()  # a previous answer ended while reading was paused
        self._parser = httptools.HttpResponseParser(self)
        self._is_head = is_head
        self.active = True
        self.received = False  # any byte of an answer yet
        self.body_sent = False  # the whole request body (if any) was written
        self._head_bytes = 0  # the headers' sizes
        self._head_read = 0  # bytes read while the head was incomplete
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self._doubtful = False
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self.keep_alive = False
        self._error: UpstreamError | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:
            self.abort()  # nothing was asked: an upstream that talks out of turn is not reused
            return
        self.received = True
        reading_head = not self._head.done()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if self.complete:  # bytes after the answer (a second one?): the answer stands, the connection not
                self.abort()
            elif isinstance(exc.__context__, UpstreamError):
                self._fail(exc.__context__)  # one of our callbacks refused it, and says why
            else:
                self._fail(UpstreamError("the upstream answer is not valid HTTP/1.1, or switched protocols"))
            return
        if reading_head and not self._head.done():
            self._head_read += len(data)
            if self._head_read > MAX_HEAD:  # llhttp would keep buffering an endless head
                self._fail(UpstreamError(f"the upstream answer's head is over {MAX_HEAD} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_clock()
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        if not self.active:
            self._client.forget(self)
        elif not self.complete:
            if self.status and self._ends_with_connection():
                self._finish(keep_alive=False)
            else:
                self._fail(UpstreamError("the upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    # --- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise UpstreamError("the upstream sent a second answer")  # never mixed into the first

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD:  # a head that came in one read is counted here
            raise UpstreamError(f"the upstream answer's head is over {MAX_HEAD} bytes")
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            raise UpstreamError(f"the upstream answered with the invalid status {status}")
        if status < 200:
            if status == 101:
                raise UpstreamError("the upstream switched protocols unasked")
            self._interim = True  # 103 Early Hints and the like: the final answer follows
            return
        codings = [value for name, value in self.headers if name.lower() == b"transfer-encoding"]
        if codings and b",".join(codings).rsplit(b",", 1)[-1].strip().lower() != b"chunked":
            # gzip and the like: the coding would be lost with this hop-by-hop header (RFC 9112 §6.1)
            raise UpstreamError("the upstream used a transfer coding other than chunked")
        self.status = status
        self._head.set_result(None)
        if self._is_head:
            self._finish(keep_alive=False)  # no body follows; llhttp would wait for one
        elif status in (204, 304) and (codings or (status == 204 and self._announces_body())):
            self._doubtful = True  # a body it must not have may still follow: the connection is not reused

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self.headers = []
            return
        if not self.complete:
            self._finish(keep_alive=self._parser.should_keep_alive() and not self._doubtful)

    # --- the exchange --------------------------------------------------------------------------

    def begin(self, head: bytes, *, is_head: bool) -> None:
        """Start an exchange by sending the request head."""
        self._reset(is_head=is_head)
        assert self._transport is not None  # noqa: S101 - connected before use
        self._transport.write(head)

    async def send_body(self, body: AsyncIterator[bytes], remaining: int | None) -> None:
        """Stream the rest of the request body: exactly `remaining` bytes, or chunk-framed if None."""
        transport = self._transport
        assert transport is not None  # noqa: S101 - connected before use
        async for chunk in body:
            if self.closed or self.complete:
                return  # the upstream answered or left: the body stays unfinished (not reusable)
            if remaining is not None:
                if len(chunk) > remaining:  # the rest would be read upstream as another request
                    raise UpstreamError("the request body is longer than its declared length")
                remaining -= len(chunk)
            if chunk:
                transport.write(chunk if remaining is not None else _framed(chunk, chunked=True))
            if self._write_ready is not None:
                await self._wait(self._write_ready, "take the request body")
        if self.closed:
            return
        if remaining is None:
            transport.write(b"0\r\n\r\n")
        elif remaining:
            raise UpstreamError("the request body is shorter than its declared length")
        self.body_sent = True

    async def wait_head(self) -> None:
        """Until the status and headers of the final answer have arrived."""
        await self._wait(self._head, "answer")

    async def head_or_writer(self, writer: asyncio.Task[None]) -> None:
        """While the body is written, until the head arrives or the writer fails; no timeout meanwhile.

        An upload can take longer than `read_timeout`; the upstream's silence counts only after it.
        """
        await asyncio.wait((self._head, writer), return_when=asyncio.FIRST_COMPLETED)

    async def next_chunk(self) -> bytes | None:
        """The body bytes received so far (waiting for some), or None at the end of the body."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            self._waiter = self._loop.create_future()
            await self._wait(self._waiter, "answer")
        return self.take_buffered()

    def take_buffered(self) -> bytes:
        """The body bytes received and not yet taken, without waiting (b"" when none)."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    async def _wait(self, future: asyncio.Future[None], what: str) -> None:
        """Until `future` is done, failing it with UpstreamTimeoutError after `read_timeout`."""
        if not future.done():
            since = self._loop.time()
            self._awaited[future] = (what, since)
            if self._silence is None:
                self._silence = self._loop.call_at(since + self._client.read_timeout, self._ring)
            try:
                await future
            finally:
                del self._awaited[future]
        future.result()

    def _ring(self) -> None:
        """The timer: time out a wait in progress that began `read_timeout` ago, or set the timer
        again for the oldest (they may have begun since it was set); none in progress: let it be."""
        self._silence = None
        if not self._awaited:
            return
        oldest = min(since for _, since in self._awaited.values())
        due = oldest + self._client.read_timeout
        if self._loop.time() + CLOCK_TICK < due:
            self._silence = self._loop.call_at(due, self._ring)
            return
        for future, (what, since) in list(self._awaited.items()):
            if since == oldest and not future.done():
                future.set_exception(UpstreamTimeoutError(f"the upstream did not {what} in time"))
        self.abort()

    def _stop_clock(self) -> None:
        """The connection is closed: no more waits to time."""
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None

    def _announces_body(self) -> bool:
        return any(
            name.lower() == b"content-length" and value.strip() != b"0" for name, value in self.headers
        )

    def _ends_with_connection(self) -> bool:
        """Whether the answer is framed by the end of the connection (neither length nor chunks)."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _finish(self, *, keep_alive: bool) -> None:
        self.complete = True  # the timer stays set: on a kept-alive connection it serves the next
        self.keep_alive = keep_alive
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # whoever waits still gets it; nobody waiting is no lost error
        self._wake()
        self.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def abort(self) -> None:
        """Drop the connection at once (the upstream sees the request cancelled)."""
        self.closed = True
        self._stop_clock()
        if self._transport is not None:
            self._transport.abort()


class Cancellation:
    """A handle to abandon one exchange: its connection is dropped at once and nothing is retried."""

    __slots__ = ("_connection", "cancelled")

    def __init__(self) -> None:
        self.cancelled = False
        self._connection: _Connection | None = None

    def cancel(self) -> None:
        """Drop the exchange's connection (the upstream sees the request cancelled)."""
        self.cancelled = True
        if self._connection is not None:
            self._connection.abort()

    def attach(self, connection: _Connection) -> None:
        """The connection the exchange now uses; dropped at once if the exchange was already abandoned."""
        self._connection = connection
        if self.cancelled:
            connection.abort()
            raise UpstreamError("the exchange was cancelled")


class UpstreamResponse:
    """An upstream's answer: status and raw headers at once, the body as it arrives."""

    def __init__(
        self, connection: _Connection, client: UpstreamClient, writer: asyncio.Task[None] | None
    ) -> None:
        self._connection = connection
        self._client = client
        self._writer = writer
        self.status = connection.status
        self.headers = connection.headers
        self._closed = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name in lower case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def buffered(self) -> bytes:
        """Body bytes that have already arrived, without waiting (b"" when none)."""
        return self._connection.take_buffered()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk as received (several small ones may come joined)."""
        while (chunk := await self._connection.next_chunk()) is not None:
            yield chunk

    async def read(self, *, limit: int | None = None) -> bytes:
        """The whole body; UpstreamError when it is longer than `limit` bytes."""
        parts = []
        size = 0
        while (chunk := await self._connection.next_chunk()) is not None:
            size += len(chunk)
            if limit is not None and size > limit:
                raise UpstreamError(f"answer longer than {limit} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Pool the connection after a complete exchange, drop it otherwise; idempotent."""
        if self._closed:
            return  # the connection may already carry another exchange
        self._closed = True
        connection, writer = self._connection, self._writer
        reusable = connection.complete and connection.keep_alive and not connection.closed
        if writer is not None:
            if not writer.done():
                writer.cancel()
            elif not writer.cancelled():
                writer.exception()  # retrieved, so asyncio does not report it as lost
            reusable = reusable and connection.body_sent  # a half-sent body would prefix the next request
        self._client.release(connection, reusable=reusable)


class UpstreamClient:
    """Pooled connections to the upstreams, one request at a time on each."""

    def __init__(
        self,
        *,
        read_timeout: float,
        connect_timeout: float = 10.0,
        idle_timeout: float = 15.0,
        max_idle: int = 100,
    ) -> None:
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle  # idle connections kept per origin
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        length: int | None = None,
        cancellation: Cancellation | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once the answer's headers arrived.

        `headers` are sent as given, plus Host and the body's framing, which is this client's alone
        (a framing header in `headers` is refused): whole `bytes` get their Content-Length; a streamed
        body gets `length` as its Content-Length, held to it exactly, or chunked framing without one;
        a bodiless POST, PUT or PATCH gets Content-Length: 0.
        `cancellation.cancel()` abandons the exchange at any point (UpstreamError where it waits).
        """
        cancellation = cancellation or Cancellation()
        try:
            origin, target = split_url(url)
        except ValueError as exc:
            raise UpstreamError(f"bad upstream URL ({exc})") from None
        if any(name.lower() in _FRAMING for name, _ in headers):
            raise UpstreamError("request framing headers are set by the client, not passed in")
        framing, streamed, first = await _framing(method, body, length)
        try:
            head = request_head(method, target, origin, headers + framing) + first
        except ValueError as exc:
            raise UpstreamError(str(exc)) from None
        remaining = None if length is None else length - len(first)
        connection, reused = await self._acquire(origin)
        try:
            cancellation.attach(connection)
            return await self._exchange(connection, head, method, streamed, remaining)
        except UpstreamTimeoutError:
            raise
        except UpstreamError:
            retry = reused and body is None and method in _IDEMPOTENT and not connection.received
            if cancellation.cancelled or not retry:
                raise
        connection, _ = await self._acquire(origin, fresh=True)  # the pooled one was closed under us
        cancellation.attach(connection)
        return await self._exchange(connection, head, method, streamed, remaining)

    async def _exchange(
        self,
        connection: _Connection,
        head: bytes,
        method: str,
        body: AsyncIterator[bytes] | None,
        remaining: int | None,
    ) -> UpstreamResponse:
        connection.begin(head, is_head=method == "HEAD")
        writer = None
        try:
            if body is None:
                await connection.wait_head()
            else:
                writer = asyncio.ensure_future(connection.send_body(body, remaining))
                await _head_or_body_failure(connection, writer)
        except BaseException:
            if writer is not None:
                writer.cancel()
            connection.abort()
            raise
        return UpstreamResponse(connection, self, writer)

    async def _acquire(self, origin: Origin, *, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()  # not the loop's clock: on Python 3.11 each get_running_loop() is a getpid()
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_timeout:
                return connection, True
            connection.abort()
        return await self._connect(origin), False

    async def _connect(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeoutError("the upstream did not accept a connection in time") from None
        except OSError as exc:  # refused, unreachable, name not resolved, TLS failure
            raise UpstreamError(f"cannot connect to the upstream ({type(exc).__name__})") from None
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()  # system CAs, hostname checks, TLS >= 1.2
        return self._tls

    def release(self, connection: _Connection, *, reusable: bool) -> None:
        """Back to the pool after a complete exchange, or closed."""
        if not connection.active:
            return  # already released
        connection.active = False
        idle = self._idle.setdefault(connection.origin, [])
        if reusable and len(idle) < self.max_idle:
            connection.idle_since = time.monotonic()
            idle.append(connection)
        else:
            connection.abort()

    def forget(self, connection: _Connection) -> None:
        """An idle connection the upstream closed: out of the pool."""
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        """Close every idle connection (active ones end with their exchange)."""
        for idle in self._idle.values():
            for connection in idle:
                connection.abort()
            idle.clear()


async def _framing(
    method: str, body: bytes | AsyncIterator[bytes] | None, length: int | None
) -> tuple[list[tuple[str, str]], AsyncIterator[bytes] | None, bytes]:
    """The framing headers, the body left to stream (if any) and the body bytes that go with the head.

    The first streamed bytes usually came with the client's head: they leave in one write with ours,
    so the upstream does not wake once for the head and again for the body.
    """
    if isinstance(body, bytes):
        return [("content-length", str(len(body)))], None, body
    if body is None:
        return ([("content-length", "0")] if method in _BODY_METHODS else []), None, b""
    if length is None:
        return [("transfer-encoding", "chunked")], body, _framed(await anext(body, b""), chunked=True)
    if length < 0:
        raise UpstreamError("a request body length cannot be negative")
    first = await anext(body, b"")
    if len(first) > length:
        raise UpstreamError("the request body is longer than its declared length")
    return [("content-length", str(length))], body, first


def _framed(chunk: bytes, *, chunked: bool) -> bytes:
    """A piece of request body as written: in chunked framing, as its chunk (none if empty: that ends it)."""
    if not chunked or not chunk:
        return chunk
    return b"%x\r\n%b\r\n" % (len(chunk), chunk)


async def _head_or_body_failure(connection: _Connection, writer: asyncio.Task[None]) -> None:
    """Wait for the answer's head while the body streams; a failure reading the body wins."""
    await connection.head_or_writer(writer)
    if writer.done() and not writer.cancelled() and writer.exception() is not None:
        raise writer.exception()  # type: ignore[misc]  # e.g. the client left, or the body limit's 413
    await connection.wait_head()  # at once if it came; else the upstream's silence is timed from now
