"""The reverse proxy: authenticated requests stream to their upstream and back, unbuffered.

Request bodies stream upstream as they arrive (a small one, up to 64 KiB declared, is read first and
leaves in one write with the head) and responses stream back chunk by chunk (SSE, Ollama's NDJSON).
A client that disconnects cancels the upstream request, before or during the answer. Redirects are
passed back, never followed. Wardgate's own credentials never reach an upstream: the `token` cookie is
removed, and so is the client's Authorization header whenever it was wardgate's credential; what the
upstream is told is `wardgate.proxy.identity`'s business.

The upstream client is wardgate's own (`proxy/client.py`: llhttp parsing through httptools, pooled
connections): per proxied request it costs well under half of aiohttp's CPU (bench/proxy.py). It
keeps no cookie jar, so one user's upstream cookie never rides along on another user's request, sends
the path exactly as authorised (no re-encoding, no dot-segment resolution) and adds no headers the
client did not send. Answers are written as ASGI messages directly: small sized ones whole, the rest
relayed chunk by chunk while a watcher listens for the client's disconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Send

from wardgate.errors import UpstreamError, UpstreamTimeoutError
from wardgate.http.middleware.security_headers import PROXIED_STATE_KEY
from wardgate.http.scope import declared_length, header
from wardgate.identity.authentication import Caller
from wardgate.observability.metrics import UNMEASURED, UpstreamCall
from wardgate.observability.tracing import TRACE_HEADERS, Tracing
from wardgate.proxy.client import CLOCK_TICK, Cancellation, UpstreamClient, UpstreamResponse
from wardgate.proxy.identity import ForwardingRules, response_headers, upstream_request_headers
from wardgate.proxy.upstreams import Upstream

log = logging.getLogger(__name__)
SMALL_ANSWER = 64 * 1024  # bytes; larger or unsized answers are streamed
SMALL_BODY = 64 * 1024  # bytes; request bodies declared larger are streamed upstream as they arrive
MAX_REWRITTEN = 8 * 1024 * 1024  # bytes of an answer wardgate rewrites (a model list) at most
WATCH_AFTER = 0.05  # seconds into an exchange before a client's disconnect is watched for


class _ClientGone(Exception):
    """The client disconnected while its request body was being read."""


class _Inbound:
    """The client's side of one exchange: its body as a stream, then a wait for its disconnect."""

    def __init__(self, receive: Receive, *, has_body: bool) -> None:
        self._receive = receive
        self.left = False
        self.body_read = asyncio.Event()
        if not has_body:
            self.body_read.set()

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.left = True
                self.body_read.set()
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.body_read.set()
                return

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([chunk async for chunk in self.body()])

    async def disconnected(self) -> None:
        await self.body_read.wait()  # never read `receive` while the body is still being sent upstream
        if self.left:
            return  # it left during the upload (the answer had already begun)
        while (await self._receive())["type"] != "http.disconnect":
            pass


class Tap(Protocol):
    """Sees an answer's body go by (`wardgate.usage.wire.UsageTap`): what it returns is sent on."""

    strip: bool  # it may change the bytes: the answer goes out without a Content-Length

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


@dataclass
class Exchange:
    """How one proxied exchange went, for the usage record: filled in as it happens."""

    status: int = 0
    first_byte: float | None = None  # time.monotonic() of the answer's first body bytes to the client
    complete: bool = False  # the whole answer reached the client


class ReverseProxy:
    """Forward one authenticated request to its upstream and relay the answer back."""

    def __init__(
        self,
        client: UpstreamClient,
        rules: ForwardingRules,
        is_ours: Callable[[str], bool],
        *,
        tracing: Tracing | None = None,
        measured: bool = True,
    ) -> None:
        self._client = client
        self.rules = rules
        self.is_ours = is_ours
        self.tracing = tracing  # ENABLE_OTEL_TRACES: a client span per call, its context sent upstream
        self.measured = measured  # False: nobody may read the metrics, so calls are not timed
        # Made in the application's lifespan, on the loop that serves it. Kept rather than asked for
        # per request: on Python 3.11 each asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._watches = _Watches(self._loop)

    async def forward(
        self,
        request: Request,
        principal: Caller,
        upstream: Upstream,
        send: Send,
        *,
        read_body: bytes | None = None,
        tap: Tap | None = None,
        rewrite: Callable[[bytes], bytes] | None = None,
        exchange: Exchange | None = None,
        before_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Send the request upstream (body streamed) and write the answer, or a 502/504, to `send`.

        A model call hands in its body already read (`read_body`), a `tap` that watches the answer
        (usage), an `exchange` to fill in and `before_end`, awaited once the answer's usage is known
        and before its end reaches the client; a model list hands in a `rewrite` of its answer."""
        scope = request.scope
        scope.setdefault("state", {})[PROXIED_STATE_KEY] = True
        headers = upstream_request_headers(scope, principal, upstream, self.rules, self.is_ours)
        if tap is not None or rewrite is not None:  # read by wardgate: never compressed
            headers = [(n, v) for n, v in headers if n.lower() != "accept-encoding"]
            headers.append(("accept-encoding", "identity"))
        url = upstream.target(scope["path"], scope["query_string"].decode("latin-1"))
        method: str = scope["method"]
        # The upstream request's framing comes from how the body arrived, never from headers passed
        # on (those are dropped): the upstream client sets the length, or chunks a stream.
        chunked = header(scope, b"transfer-encoding") is not None  # wins over a length (RFC 9112 §6.3)
        declared = None if chunked else header(scope, b"content-length")
        length = declared_length(declared)
        inbound = _Inbound(request.receive, has_body=read_body is None and (chunked or declared is not None))
        body: bytes | AsyncIterator[bytes] | None = None
        if read_body is not None:
            body, length = read_body, len(read_body)
        elif length is not None and length <= SMALL_BODY:
            try:
                body = await inbound.read()  # a chat request, say: it leaves in one write with the head
            except _ClientGone:
                return
        elif chunked or declared is not None:
            body = inbound.body()  # an upload: streamed as it arrives, held to its declared length
        cancellation = Cancellation()
        watch = _DisconnectWatch(inbound, cancellation, self._loop)
        call = UpstreamCall(upstream.name) if self.measured else UNMEASURED
        shaping = _Shaping(call, tap, rewrite, exchange, before_end)
        self._watches.add(watch)
        try:
            if self.tracing is None:
                pending = self._client.request(
                    method, url, headers, body, length=length, cancellation=cancellation
                )
                await _answer(request, upstream, pending, cancellation, send, shaping)
                return
            with self.tracing.client_span(upstream.name, method, url) as span:
                # The upstream sees this call's span as its parent, never a client's own trace headers.
                headers = [(n, v) for n, v in headers if n.lower() not in TRACE_HEADERS]
                headers += self.tracing.context_headers()
                pending = self._client.request(
                    method, url, headers, body, length=length, cancellation=cancellation
                )
                await _answer(request, upstream, pending, cancellation, send, shaping)
                span.set_attribute("http.response.status_code", shaping.status)
        finally:
            self._watches.discard(watch)
            watch.stop()
            shaping.call.ended()


@dataclass
class _Shaping:
    """How one answer is relayed: its metrics, and what a model call adds (a tap, a rewrite, an
    exchange to fill in)."""

    call: UpstreamCall  # its metrics
    tap: Tap | None = None
    rewrite: Callable[[bytes], bytes] | None = None
    exchange: Exchange | None = None
    before_end: Callable[[], Awaitable[None]] | None = None
    status: int = 0  # the upstream's status, or the 502/504 that replaced its answer

    async def ending(self) -> None:
        """The answer is about to end: its usage is known (budgets are charged before a client can
        send its next call)."""
        if self.before_end is not None:
            await self.before_end()

    def answered(self, status: int) -> None:
        self.status = status
        if self.exchange is not None:
            self.exchange.status = status

    def first_bytes(self) -> None:
        if self.exchange is not None and self.exchange.first_byte is None:
            self.exchange.first_byte = time.monotonic()


class _DisconnectWatch:
    """Cancels the upstream exchange when the client leaves, so the upstream stops working for nobody.

    It starts after `WATCH_AFTER` seconds (`_Watches`): a task waiting on `receive` costs about a
    sixth of a quick proxied request, which is over before then; a long answer (a model thinking for
    minutes, a stream) is watched, and a client that left earlier is found at once when the watch
    starts.
    """

    __slots__ = ("_cancellation", "_inbound", "_loop", "_task")

    def __init__(
        self, inbound: _Inbound, cancellation: Cancellation, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._inbound = inbound
        self._cancellation = cancellation
        self._loop = loop
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        await self._inbound.disconnected()
        self._cancellation.cancel()

    def stop(self) -> None:
        """The exchange is over: stop watching."""
        if self._task is not None:
            self._task.cancel()


class _Watches:
    """The proxy's disconnect watches not started yet, each started `WATCH_AFTER` seconds into its
    exchange by one timer for them all (a timer made and cancelled per request cost 1.7 µs)."""

    __slots__ = ("_loop", "_timer", "_waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: dict[_DisconnectWatch, float] = {}  # by the loop's time they were added: oldest first
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: _DisconnectWatch) -> None:
        now = self._loop.time()
        self._waiting[watch] = now
        if self._timer is None:
            self._timer = self._loop.call_at(now + WATCH_AFTER, self._ring)

    def discard(self, watch: _DisconnectWatch) -> None:
        """The exchange is over: its watch never starts."""
        self._waiting.pop(watch, None)

    def _ring(self) -> None:
        """Start every watch that has waited `WATCH_AFTER`; set the timer for the next one."""
        self._timer = None
        now = self._loop.time()
        while self._waiting:
            watch, added = next(iter(self._waiting.items()))
            if added + WATCH_AFTER > now + CLOCK_TICK:
                self._timer = self._loop.call_at(added + WATCH_AFTER, self._ring)
                return
            del self._waiting[watch]
            watch.start()


async def _answer(
    request: Request,
    upstream: Upstream,
    pending: Awaitable[UpstreamResponse],
    cancellation: Cancellation,
    send: Send,
    shaping: _Shaping,
) -> None:
    """Await the upstream's answer and write it, or the 502/504 that replaces it, to `send`."""
    try:
        answer = await pending
    except _ClientGone:
        return
    except UpstreamTimeoutError:
        log.warning("upstream %s timed out", upstream.name)
        shaping.call.failed("timeout")
        shaping.answered(504)
        await _refuse(request, send, 504, f"The {upstream.name} service did not answer in time.")
        return
    except UpstreamError as exc:
        if cancellation.cancelled:
            return  # the client left: nobody to answer
        log.warning("upstream %s unavailable (%s)", upstream.name, exc)
        shaping.call.failed("unavailable")
        shaping.answered(502)
        await _refuse(request, send, 502, f"The {upstream.name} service is unavailable.")
        return
    shaping.call.answered(answer.status)
    shaping.answered(answer.status)
    if not 200 <= answer.status < 300:
        shaping.tap = None  # a refusal carries no usage (and may echo what the client sent)
    try:
        if _is_small(answer) or (shaping.rewrite is not None and answer.status == 200):
            await _send_whole(answer, request, cancellation, send, shaping)
        else:
            await _relay(answer, cancellation, send, shaping)
    finally:
        answer.close()  # pooled again after a complete exchange, dropped (the upstream sees it) otherwise


async def _refuse(request: Request, send: Send, status: int, detail: str) -> None:
    response: Response = JSONResponse({"detail": detail}, status_code=status)
    await response(request.scope, request.receive, send)


def _is_small(answer: UpstreamResponse) -> bool:
    """A sized answer of at most 64 KiB that is not an event stream: cheaper sent whole than relayed."""
    length = declared_length(answer.header(b"content-length"))
    content_type = answer.header(b"content-type") or b""
    return length is not None and length <= SMALL_ANSWER and b"text/event-stream" not in content_type


def _start(answer: UpstreamResponse, *, length: int | None = None, unsized: bool = False) -> Message:
    """The answer's head: its own length, `length` when wardgate changed the body, or none at all
    (`unsized`: the body may change as it streams, so it goes out chunked)."""
    headers = response_headers(answer.headers)
    if answer.status in (204, 304) or length is not None or unsized:
        # no body follows a 204 or 304, whatever length a 304 announces (RFC 9110 §8.6)
        headers = [(name, value) for name, value in headers if name != b"content-length"]
    if length is not None and answer.status not in (204, 304):
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": answer.status, "headers": headers}


async def _send_whole(
    answer: UpstreamResponse, request: Request, cancellation: Cancellation, send: Send, shaping: _Shaping
) -> None:
    try:
        body = await answer.read(limit=MAX_REWRITTEN if shaping.rewrite is not None else None)
    except UpstreamError as exc:
        if cancellation.cancelled:
            return
        log.warning("upstream answer broke off (%s)", exc)
        shaping.call.failed("broken")
        await _refuse(request, send, 502, "The upstream answer broke off.")
        return
    sent = body  # as sent: still encoded, unless wardgate reads it (then it asked for no encoding)
    if shaping.rewrite is not None and answer.status == 200:
        sent = shaping.rewrite(body)
    if shaping.tap is not None:
        sent = shaping.tap.feed(sent) + shaping.tap.close()
    await shaping.ending()
    shaping.first_bytes()
    await send(_start(answer, length=len(sent) if sent is not body else None))
    await send({"type": "http.response.body", "body": sent})
    if shaping.exchange is not None:
        shaping.exchange.complete = True


async def _relay(
    answer: UpstreamResponse, cancellation: Cancellation, send: Send, shaping: _Shaping | None = None
) -> None:
    """Chunks as the upstream sends them, until it ends or the client leaves (which cancels it).

    An upstream that breaks off leaves the response unfinished: the server then closes the
    connection, so the client sees the stream cut short rather than ended.
    """
    tap = shaping.tap if shaping is not None else None
    await send(_start(answer, unsized=tap is not None and tap.strip))
    try:
        async for chunk in answer.chunks():
            out = tap.feed(chunk) if tap is not None else chunk
            if out:
                if shaping is not None:
                    shaping.first_bytes()
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except UpstreamError as exc:
        if not cancellation.cancelled:
            log.warning("upstream stream broke off (%s)", exc)
            if shaping is not None:
                shaping.call.failed("broken")
        return
    rest = tap.close() if tap is not None else b""
    if shaping is not None:
        await shaping.ending()
    await send({"type": "http.response.body", "body": rest})
    if shaping is not None and shaping.exchange is not None:
        shaping.exchange.complete = not cancellation.cancelled
