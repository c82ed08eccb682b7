"""The server: uvicorn on httptools (llhttp), with the bounds a process facing the internet needs.

uvicorn's httptools protocol builds the request line and headers by appending bytes with no cap and
checks nothing until the head is complete; it has no timeout for a head that never completes and
none for a connection that never sends a byte. `BoundedHttpToolsProtocol` adds, per connection:

- **head size**: bytes of a request head (request line and header fields) past `MAX_HEADER_SIZE`
  are never handed to the parser: the request is answered 431 and the connection closed as the
  limit is crossed, so one client cannot make the process buffer (or parse) megabytes;
- **head time**: a head must arrive whole within `CLIENT_HEADER_TIMEOUT` seconds of its first byte,
  or of the connection opening (408, then close): a client trickling a header line every few
  seconds (slowloris) or opening sockets and sending nothing holds a connection that long at most;
- **body time**: a request body under way must keep coming: at most `CLIENT_BODY_TIMEOUT` seconds
  between two reads of it (nginx's `client_body_timeout`), else 408 and close (a plain close once an
  answer has begun). A client that announces a body and stalls (a slow POST) would otherwise hold
  the connection and the request's task for as long as it likes. A clock that runs out while the
  server itself is not reading (the application is behind, the request waits behind another) or
  has not sent `100 Continue` yet starts again. No 408 is ever written while an answer is under
  way: a head clock that runs out then waits for the answer's end;
- **send time**: an answer must keep leaving: while the connection's write buffer is over its high
  mark (the client does not read), it must shrink within `SEND_TIMEOUT` seconds (nginx's
  `send_timeout`), else the connection is cut. A client that stops reading would otherwise hold the
  connection, the answer's task and its buffered bytes for ever;
- **pipelining**: at most `MAX_PIPELINED` requests are read ahead of their answers; past that the
  connection reads and parses nothing more and closes once they are answered (a head over the
  limit behind them gets its 431 then, not in place of the first answer). A queued request's body
  is not read past 64 KiB before its application runs, and a chunked body's trailers count against
  the head limit and are dropped (uvicorn would add them to the headers of the request served);
- **connections per client**: at most `MAX_CONNECTIONS_PER_IP` open connections per client address
  (IPv6 counted per `RATE_LIMIT_IPV6_PREFIX` network); more are closed at once. The proxies of
  `FORWARDED_ALLOW_IPS` are not counted: every client behind them shares their address.

One module, past the ~300-line guidance: the clocks, the head count and the per-client count all
act on one connection's state and on uvicorn's protocol internals (its cycle, pipeline and flow
control). Whether some byte sequence can hold a connection with no clock running is answered by
reading them together; apart, each would look complete on its own.

Idle keep-alive connections close after `KEEP_ALIVE_TIMEOUT` (uvicorn's own timer), and a stop
drains in-flight requests and streams for `GRACEFUL_SHUTDOWN_TIMEOUT` seconds. The parsing itself
stays llhttp's: this wrapper only decides how much it is given and for how long.

Memory the process frees goes back to the system (`return_large_allocations`): each Argon2id hash
allocates 19 MiB, and with glibc's default the threshold for mmap grows past that after the first
free, so each worker thread's heap kept its own copy. Measured: 200 failed sign-ins from 16 clients
took the process from 133 to 420 MiB, never given back; with the fixed threshold, 114 to 117 MiB.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess

from wardgate.config.network import TrustedProxies, address_bucket
from wardgate.config.settings import Settings
from wardgate.http.application import ASGIApp

log = logging.getLogger(__name__)
_TOO_LARGE = b"Request header fields too large"
_HEAD_TOO_LARGE = b"431 Request Header Fields Too Large"
# Requests read ahead of their answers on one connection (pipelined): each holds a few KB until its
# turn. Past this many the connection reads nothing more and closes after their answers.
MAX_PIPELINED = 100
WS_MAX_MESSAGE = 1024 * 1024  # bytes of one WebSocket message from a client, once decompressed
_ON_URL, _ON_HEADER = HttpToolsProtocol.on_url, HttpToolsProtocol.on_header  # uvicorn's, without super()
_TOO_SLOW = b"The request head did not arrive in time"
_BODY_TOO_SLOW = b"The request body stopped arriving"
_NOT_A_HANDSHAKE = b"This WebSocket handshake cannot be read (a handshake has no body)"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection, and one client, may take of the server."""

    max_head_bytes: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    max_per_client: int
    ipv6_prefix: int
    trusted: TrustedProxies


def _refusal(status: bytes, detail: bytes) -> bytes:
    body = b'{"detail":"' + detail + b'"}'
    return b"".join(
        (
            b"HTTP/1.1 " + status + b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        )
    )


class CoalescedWrites:
    """A connection's transport whose writes leave in pairs: uvicorn writes an answer's head and
    its body with one system call each, two TCP segments for an answer that fits in one. A write is
    held until the next one (both leave in one system call), the answer's completion (`flush`, from
    the protocol) or the end of the event loop's step, whichever comes first: no chunk of a stream
    waits for more than the next. Order is kept, and `close` sends what is held first. Everything
    else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Hold `data`, or send it with the write held."""
        if not data:
            return
        held = self._held
        if held is None:
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._held = None
            self._transport.writelines((held, data))

    def writelines(self, chunks: Iterable[bytes]) -> None:
        """Each chunk, as `write` sends it."""
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        """Send what is held, then close the writing side."""
        self.flush()
        self._transport.write_eof()

    def flush(self) -> None:
        """Send what is held."""
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def discard(self) -> None:
        """Forget what is held: the connection is gone (a flush would write to a closed handle)."""
        self._held = None

    def close(self) -> None:
        """Send what is held, then close (after the transport's own buffer is sent)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Close at once: what is held is dropped with the transport's buffer."""
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        """Whether the transport is closing or closed."""
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        """Bytes not yet sent: held here, and in the transport's buffer."""
        held = len(self._held) if self._held is not None else 0
        return held + self._transport.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _silent() -> None:
    """What a closed clock rings."""


class _Clock:
    """One of a connection's timers: started (again), stopped, running or not. When it runs out it
    is stopped before `ring` is called, so that `ring` may start it again."""

    __slots__ = ("_handle", "_loop", "_ring")

    def __init__(self, loop: asyncio.AbstractEventLoop, ring: Callable[[], None]) -> None:
        self._loop = loop
        self._ring = ring
        self._handle: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self, seconds: float) -> None:
        self.stop()
        self._handle = self._loop.call_later(seconds, self._ran_out)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ran_out(self) -> None:
        self._handle = None
        self._ring()

    def close(self) -> None:
        """Stop, and let go of `ring`: a connection's clocks hold its bound methods, a reference
        cycle that only the garbage collector would otherwise break."""
        self.stop()
        self._ring = _silent


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounded request heads and a cap on connections per client."""

    limits: ClassVar[ConnectionLimits]
    open_per_client: ClassVar[Counter[str]]  # one per server process (see `protocol_for`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bucket: str | None = None  # counted against this client key while open
        self._in_head = True
        self._head_begun = False  # a head's first bytes were parsed, its end not yet
        self._heads_done = 0  # heads parsed whole on this connection
        self._body_clock = _Clock(self.loop, self._body_too_slow)
        self._send_clock = _Clock(self.loop, self._send_too_slow)
        self._unsent = 0  # bytes waiting to be sent when the send clock last looked
        self._body_at = 0.0  # the loop's time of the body's last bytes
        self._head_bytes = 0
        self._head_clock = _Clock(self.loop, self._head_too_slow)
        self._head_counted = 0  # bytes of the head (or trailer) being parsed, as the parser hands them over
        self._max_head_bytes = self.limits.max_head_bytes
        self._progressed = False  # the last bytes fed to a body carried some, or ended a message or head
        self._unbodied = 0  # bytes fed while reading a body, since the last that carried some
        self._stopped = False  # nothing more is read or parsed; the connection ends after its answers
        self._last_word: bytes | None = None  # the status a stopped connection ends with (else none)

    # --- connections per client ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection unless its client already holds its share; start the head clock."""
        super().connection_made(CoalescedWrites(transport, self.loop))  # type: ignore[arg-type]
        host = self.client[0] if self.client else None
        if not self.limits.trusted.trusts(host):
            bucket = address_bucket(host, self.limits.ipv6_prefix)
            if self.open_per_client[bucket] >= self.limits.max_per_client:
                log.warning("connection refused: %s holds %d connections", bucket, self.limits.max_per_client)
                transport.abort()
                return
            self.open_per_client[bucket] += 1
            self._bucket = bucket
        self._head_clock.start(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Release the client's share and the head clock; forget what is held of an answer."""
        self._release()
        self.transport.discard()  # type: ignore[attr-defined]
        super().connection_lost(exc)

    def _release(self) -> None:
        self._head_clock.close()
        self._body_clock.close()
        self._send_clock.close()
        if self._bucket is not None:
            self.open_per_client[self._bucket] -= 1
            if self.open_per_client[self._bucket] <= 0:
                del self.open_per_client[self._bucket]
            self._bucket = None

    def handle_websocket_upgrade(self) -> None:
        """Hand over to the WebSocket protocol, which then holds the client's share until it closes."""
        self._head_clock.stop()
        transport: CoalescedWrites = self.transport  # type: ignore[assignment]
        super().handle_websocket_upgrade()
        socket_protocol = self.transport.get_protocol()
        lost = socket_protocol.connection_lost

        def release_then_lose(exc: Exception | None) -> None:
            self._release()
            transport.discard()
            # What uvicorn's connection_lost does, which this protocol's never is: the parser
            # holds this protocol's methods. And the WebSocket protocol's own method again: this
            # closure holds both protocols. Neither is then left for the garbage collector.
            self.parser = None  # type: ignore[assignment]
            try:
                lost(exc)
            finally:
                del socket_protocol.connection_lost

        socket_protocol.connection_lost = release_then_lose  # type: ignore[method-assign]
        if not getattr(socket_protocol, "handshake_initiated", True):
            # uvicorn's WebSocket protocol (websockets, sans I/O) was handed a head the websockets
            # library would not parse (a body, over 128 fields, a line over 8 KiB) and answers
            # nothing: the client would wait, and the connection stay open, for ever.
            self._refuse(b"400 Bad Request", _NOT_A_HANDSHAKE)

    # --- bounded heads -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Feed the parser, but never more than `max_head_bytes` of one request head; nothing once
        the connection is stopped (it ends when its answers are out)."""
        if not self._stopped:
            self._feed(data)
        self._end_if_stopped()

    def _feed(self, data: bytes) -> None:
        if not self._in_head:
            self._body_at = self.loop.time()
            self._progressed = False
            super().data_received(data)
            if self._stopped or self.transport.get_protocol() is not self:
                return  # stopped, or upgraded to a WebSocket: the rest is the socket's
            if not self._progressed:
                self._count_unbodied(len(data))  # chunk framing, or trailers: httptools holds a field
            self._clock_body()
            if self._in_head and (self._head_begun or not self._answering()):
                # The body ended here, behind an answer already sent (uvicorn armed its keep-alive
                # clock then, and these bytes stopped it), or a next head began: time what follows.
                # That head's bytes so far are counted as the parser handed them over.
                self._head_bytes = self._head_counted
                self._clock_unfinished_head()
            return
        room = self._max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            heads_before = self._heads_done
            super().data_received(data)
            # A head that came whole (nearly every one) needs no clock. One starts for a head still
            # unfinished after these bytes (after a keep-alive pause, or pipelined behind a
            # request), and for bytes that finished no head: the empty lines llhttp skips between
            # requests begin none, yet they stopped uvicorn's keep-alive clock.
            if self._head_begun or self._heads_done == heads_before:
                self._clock_unfinished_head()
            self._clock_body()
            return
        # The head may end inside this chunk (a body follows, or more requests): feed what fits, and
        # refuse only when this head is still incomplete with the limit reached.
        self._head_bytes += room
        heads_before = self._heads_done
        fed = data[:room]
        super().data_received(fed)
        if self._stopped or self.transport.get_protocol() is not self:
            return  # stopped, or upgraded to a WebSocket: the rest is the socket's
        if self._in_head:
            if self._heads_done == heads_before:
                self._stop(_HEAD_TOO_LARGE)
                return
            # Heads ended in these bytes (pipelined requests): the head begun after them is not
            # over the limit yet. It has at most the bytes after the last blank line.
            end = fed.rfind(b"\r\n\r\n")
            self._head_bytes = room - (end + 4) if end >= 0 else room
        if self.parser is not None and not self.transport.is_closing():
            self._feed(data[room:])

    def _count_unbodied(self, size: int) -> None:
        """Bytes of a body being read that carried none of it (chunk sizes, trailers), since the last
        that did: past `max_head_bytes` the request is refused. A trailer field is held whole by the
        parser until it ends, before any callback could count it."""
        self._unbodied += size
        if self._unbodied > self._max_head_bytes:
            self._refuse_mid_body()

    def _refuse_mid_body(self) -> None:
        """A request whose body breaks a limit: 431 if nothing was answered on the connection since
        it began, else the connection is closed (a status now would answer an earlier request)."""
        self._stopped = True
        cycle = self.cycle
        if self.pipeline or (cycle is not None and cycle.response_started):
            self.transport.close()
        else:
            self._refuse(_HEAD_TOO_LARGE, _TOO_LARGE)

    def _count_head(self, size: int) -> None:
        """Bytes of a head the parser handed over: past `max_head_bytes`, 431. This bounds a head
        that began in the same read as the end of a body before it, which the parser was fed whole."""
        self._head_counted += size
        if self._head_counted > self._max_head_bytes:
            self._stop(_HEAD_TOO_LARGE)

    def _stop(self, last_word: bytes | None) -> None:
        """Read and parse nothing more on this connection: once the answers to the requests read
        before are out (a status now would be read as the first one's), send `last_word` (431), or
        just close (RFC 9112 §9.3.2: a client asks unanswered requests again on a new connection)."""
        if self._stopped:
            return
        self._stopped = True
        self._last_word = last_word
        self._head_clock.stop()
        self._body_clock.stop()
        self.transport.pause_reading()

    def _end_if_stopped(self) -> None:
        """After bytes were fed or an answer went out: a stopped connection ends once nothing is
        left to answer; until then it reads nothing (uvicorn resumes reading after each answer)."""
        if not self._stopped or self.transport.is_closing():
            return
        if self._answering():
            self.transport.pause_reading()
        elif self._last_word is not None:
            self._refuse(self._last_word, _TOO_LARGE)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        """A request head starts (its bytes are counted from the last complete head on)."""
        if self._stopped:
            return  # every callback: the parser still walks the bytes of the read, nothing is kept
        self._in_head = True
        self._head_begun = True
        self._head_counted = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """Part of the request target (counted towards the head)."""
        if self._stopped:
            return
        self._count_head(len(url))
        if not self._stopped:
            _ON_URL(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header of the head, counted (once per header of every request: kept lean)."""
        self._head_counted += len(name) + len(value) + 4
        if self._head_counted <= self._max_head_bytes and self._in_head and not self._stopped:
            _ON_HEADER(self, name, value)
        else:
            self._unusual_header()

    def _unusual_header(self) -> None:
        """A header past the limit, one of a stopped connection, or a chunked body's trailer:
        counted and dropped (uvicorn would add it to the headers of a request already served)."""
        if self._stopped or self._head_counted <= self._max_head_bytes:
            return
        if self._in_head:
            self._stop(_HEAD_TOO_LARGE)
        else:  # trailers past the limit: refused now, as their app waits for a body end
            self._refuse_mid_body()

    def on_headers_complete(self) -> None:
        """The head arrived whole in time: stop its clock and let the body through unbounded here
        (the body limit is `MAX_BODY_SIZE`'s, applied by the application)."""
        if self._stopped:
            return
        if len(self.pipeline) >= MAX_PIPELINED:
            self._stop(None)  # this request waits unread for no one: the client asks it again
            return
        self._in_head = False
        self._head_begun = False
        self._heads_done += 1
        self._head_bytes = 0
        self._head_counted = 0  # from here on: a chunked body's trailers
        self._progressed = True
        self._head_clock.stop()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        """Body bytes, for the request being read; reading pauses while the requests queued behind
        an answer hold more than `HIGH_WATER_LIMIT` of body in all (uvicorn counts each request's
        alone: a hundred bodies of 60 KB each waited in memory, found by review)."""
        if not self._stopped:
            self._progressed = True
            self._unbodied = 0
            super().on_body(body)
            if self.pipeline and self._queued_body() > HIGH_WATER_LIMIT:
                self.flow.pause_reading()

    def _queued_body(self) -> int:
        """Bytes of body held by the requests waiting for their turn."""
        return sum(len(cycle.body) for cycle, _app in self.pipeline)

    def on_response_complete(self) -> None:
        """An answer is complete: send what is held of it now, not at the end of the loop's step
        (and the 431 of a head over the limit once every answer before it is out)."""
        self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()  # starts the next pipelined request, and resumes reading
        if self.pipeline and self._queued_body() > HIGH_WATER_LIMIT:
            self.flow.pause_reading()  # a queued request's body waits for its app, not in memory
        self._end_if_stopped()

    def _should_upgrade(self) -> bool:
        """A stopped connection parses no head: its upgrade is not one."""
        return not self._stopped and super()._should_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        if not self._stopped:  # no log line per head of a stopped connection
            super()._unsupported_upgrade_warning()

    def on_message_complete(self) -> None:
        """The request is whole: the next bytes on this connection are a new head."""
        if self._stopped:
            return
        self._head_counted = 0  # what trailers counted is not the next head's
        self._unbodied = 0
        self._progressed = True  # the bytes of this read that follow are heads: counted as heads
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        self._body_clock.stop()

    # --- bounded sending ---------------------------------------------------------------------------

    def pause_writing(self) -> None:
        """The write buffer passed its high mark: from now on it must shrink in time."""
        super().pause_writing()
        if not self._send_clock.running:
            self._unsent = self.transport.get_write_buffer_size()
            self._send_clock.start(self.limits.send_timeout)

    def resume_writing(self) -> None:
        """The client read enough: the buffer is below its low mark again."""
        super().resume_writing()
        self._send_clock.stop()

    def _send_too_slow(self) -> None:
        unsent = self.transport.get_write_buffer_size()
        if unsent < self._unsent:  # it moves, slowly: look again later
            self._unsent = unsent
            self._send_clock.start(self.limits.send_timeout)
            return
        log.info("connection cut: the client read nothing of its answer for %ss", self.limits.send_timeout)
        self.transport.abort()

    # --- bounded bodies ----------------------------------------------------------------------------

    def _clock_body(self) -> None:
        """After bytes were fed: a body under way (its head parsed, its end not) is timed between
        reads. A request without a body ends with its head: no clock."""
        if self._in_head or self._body_clock.running or self.transport.is_closing():
            return
        if self.transport.get_protocol() is not self:
            return  # upgraded to a WebSocket
        self._body_at = self.loop.time()
        self._body_clock.start(self.limits.body_timeout)

    def _body_too_slow(self) -> None:
        if self._in_head or self.transport.is_closing():
            return
        now = self.loop.time()
        cycle = self.cycle
        waits = self.flow.read_paused or bool(self.pipeline)  # the server is not reading (yet)
        if waits or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_at = now  # not the client's delay: it waits for us
        idle = now - self._body_at
        if idle < self.limits.body_timeout:
            self._body_clock.start(self.limits.body_timeout - idle)
            return
        if cycle is not None and cycle.response_started:
            self.transport.close()  # an answer has begun: a 408 can no longer be sent
        else:
            self._refuse(b"408 Request Timeout", _BODY_TOO_SLOW)

    def _clock_unfinished_head(self) -> None:
        if not self._head_clock.running and not self.transport.is_closing():
            self._head_clock.start(self.limits.head_timeout)

    def _answering(self) -> bool:
        """Whether an answer is still to be written on this connection (a 408 now would land in it)."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def _head_too_slow(self) -> None:
        if not self._in_head or self.transport.is_closing():
            return
        if self._answering():  # behind an answer still going out: timed again once it is done
            self._head_clock.start(self.limits.head_timeout)
            return
        if self._head_bytes:
            self._refuse(b"408 Request Timeout", _TOO_SLOW)
        else:
            self.transport.close()  # nothing was asked: nothing to answer

    def _refuse(self, status: bytes, detail: bytes) -> None:
        self._head_clock.stop()
        if not self.transport.is_closing():
            self.transport.write(_refusal(status, detail))
            self.transport.close()
        self._in_head = False


def protocol_for(limits: ConnectionLimits) -> type[BoundedHttpToolsProtocol]:
    """A protocol class bound to these limits, with a connection count of its own."""
    return type(
        "WardgateHttpProtocol",
        (BoundedHttpToolsProtocol,),
        {"limits": limits, "open_per_client": Counter()},
    )


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
_LARGE_ALLOCATION = 1 << 20


def return_large_allocations() -> bool:
    """Have glibc serve allocations of 1 MiB and more with mmap, so that freeing them returns the
    memory at once (a fixed threshold also stops glibc raising it). False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGE_ALLOCATION))


def connection_limits(settings: Settings) -> ConnectionLimits:
    """What one connection and one client may take, from the settings (per worker process)."""
    return ConnectionLimits(
        max_head_bytes=settings.max_header_size,
        head_timeout=settings.client_header_timeout,
        body_timeout=settings.client_body_timeout,
        send_timeout=settings.send_timeout,
        max_per_client=settings.max_connections_per_ip,
        ipv6_prefix=settings.rate_limit_ipv6_prefix,
        trusted=settings.forwarded_allow_ips,
    )


class WorkerHttpProtocol(BoundedHttpToolsProtocol):
    """The protocol of a worker process (`UVICORN_WORKERS`), importable by name in the worker; its
    limits are set there, from the same settings, before it serves (`configure_worker`)."""

    open_per_client: ClassVar[Counter[str]] = Counter()


def configure_worker(settings: Settings) -> None:
    """Bind this worker process's protocol to the limits of `settings`; return large allocations."""
    WorkerHttpProtocol.limits = connection_limits(settings)
    return_large_allocations()


class WorkerSupervisor(Multiprocess):
    """uvicorn's supervisor of worker processes (restarts a worker that dies or hangs, stops them all
    on SIGINT/SIGTERM, replaces them one by one on SIGHUP), telling `on_exit` which ended."""

    def __init__(
        self, config: uvicorn.Config, sockets: list[socket.socket], on_exit: Callable[[int], None]
    ) -> None:
        super().__init__(config, sockets)
        self._on_exit = on_exit

    def keep_subprocess_alive(self) -> None:
        """Replace the workers that died, then report them."""
        self._reporting(super().keep_subprocess_alive)

    def restart_all(self) -> None:
        """Replace every worker one by one (SIGHUP; the settings stay those of the start), then
        report the ones replaced."""
        self._reporting(super().restart_all)

    def _reporting(self, change: Callable[[], None]) -> None:
        before = {process.pid for process in self.processes}
        change()
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None:
                self._on_exit(pid)


def _options(
    settings: Settings, *, host: str, port: int, certfile: str | None, keyfile: str | None
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
        "proxy_headers": False,  # TrustedProxyMiddleware decides, from FORWARDED_ALLOW_IPS
        "server_header": False,
        "date_header": True,
        "log_level": settings.global_log_level.lower(),
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "timeout_graceful_shutdown": settings.graceful_shutdown_timeout,
        # A WebSocket message from a client, decompressed: uvicorn's default of 16 MiB let 16 KiB of
        # deflate become 16 MiB, and a dozen in one read stalled the loop for half a second and grew
        # the process by 370 MiB (found by review). Open WebUI's socket.io takes 1 MB at most.
        "ws_max_size": WS_MAX_MESSAGE,
    }


def settle_heap() -> None:
    """Before serving: move everything built so far (modules, classes, the application) out of the
    garbage collector's sight, and collect the young generation less often.

    Measured with bench/proxy.py: the collector's full passes walked every object of the imports on
    each run, which made p99 of proxied requests 81 ms; with the start-up objects frozen and a
    gen-0 threshold of 50,000 it was 14-18 ms, and 8 % less CPU per request. What is frozen is never
    collected, so this runs once, in a process that goes on to serve.
    """
    gc.collect()  # what start-up left as garbage is freed, not frozen with the rest
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    gc.enable()  # off during start-up when started by `wardgate.__main__`


def run(
    app: ASGIApp, settings: Settings, *, host: str, port: int, certfile: str | None, keyfile: str | None
) -> None:
    """Serve `app` in this process until SIGINT or SIGTERM, then drain for `GRACEFUL_SHUTDOWN_TIMEOUT`."""
    if not return_large_allocations():
        log.info("not glibc: large allocations are returned as the C library decides")
    settle_heap()
    options = _options(settings, host=host, port=port, certfile=certfile, keyfile=keyfile)
    uvicorn.run(app, http=protocol_for(connection_limits(settings)), **options)


def run_workers(
    factory: str,
    settings: Settings,
    *,
    host: str,
    port: int,
    certfile: str | None,
    keyfile: str | None,
    on_exit: Callable[[int], None],
) -> None:
    """Serve with `UVICORN_WORKERS` processes sharing one listening socket; each builds its own
    application by calling `factory` ("module:function", the process's settings come from the
    environment it inherits) and must call `configure_worker`."""
    options = _options(settings, host=host, port=port, certfile=certfile, keyfile=keyfile)
    config = uvicorn.Config(
        factory,
        factory=True,
        workers=settings.uvicorn_workers,
        http=f"{WorkerHttpProtocol.__module__}:{WorkerHttpProtocol.__qualname__}",
        **options,
    )
    WorkerSupervisor(config, sockets=[config.bind_socket()], on_exit=on_exit).run()
