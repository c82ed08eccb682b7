"""The reverse proxy: authenticated requests stream to their upstream and back, unbuffered.

Request bodies stream upstream as they arrive (a small one, up to 64 KiB declared, is read first and
leaves in one write with the head) and responses stream back chunk by chunk (SSE, Ollama's NDJSON).
A client that disconnects cancels the upstream request, before or during the answer. Redirects are
passed back, never followed. Wardgate's own credentials never reach an upstream: the `token` cookie is
removed, and so is the client's Authorization header whenever it was wardgate's credential. Identity
headers arriving from the client are always removed before wardgate adds its own.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Send

from wardgate.errors import BadRequestError, UpstreamError, UpstreamTimeoutError
from wardgate.http.deps import TOKEN_COOKIE, Caller
from wardgate.http.middleware.security_headers import PROXIED_STATE_KEY
from wardgate.http.scope import header
from wardgate.proxy.client import Cancellation, UpstreamClient, UpstreamResponse
from wardgate.proxy.upstreams import FORWARDING, HOP_BY_HOP, Upstream

log = logging.getLogger(__name__)
SMALL_ANSWER = 64 * 1024  # bytes; larger or unsized answers are streamed
SMALL_BODY = 64 * 1024  # bytes; request bodies declared larger are streamed upstream as they arrive
WATCH_AFTER = 0.05  # seconds into an exchange before a client's disconnect is watched for
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
# `token`, and the nameless cookie a browser sends back as a bare value: `=token=x` would come back
# as `token=x`, a second session cookie next to wardgate's own.
_NOT_SETTABLE = frozenset({TOKEN_COOKIE.encode(), b""})


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    """Names of the headers that tell the upstream who is signed in (Open WebUI's trusted-header mode)."""

    email: str
    name: str
    groups: str
    role: str
    lowered: frozenset[str] = field(init=False, repr=False)  # the names, lower-cased, for stripping

    def __post_init__(self) -> None:
        names = frozenset(h.lower() for h in (self.email, self.name, self.groups, self.role) if h)
        object.__setattr__(self, "lowered", names)  # once, not on every proxied request

    def values(self, principal: Caller) -> list[tuple[str, str]]:
        """The headers for this user; the name is URL-encoded as Open WebUI expects (non-ASCII safe)."""
        user = principal.user
        pairs = [
            (self.email, user.email),
            (self.name, quote(user.name, safe=" ")),
            (self.role, user.role),
            (self.groups, ",".join(getattr(user, "groups", ()))),
        ]
        return [(name, value) for name, value in pairs if name]


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(","))
    return tokens


def _without_wardgate_cookie(cookie_header: str) -> str:
    """The header minus every `token` pair, split as authentication splits it (Starlette's
    `cookie_parser`: on `;`, names trimmed); the app's own pairs pass byte for byte."""
    kept = [pair for pair in cookie_header.split(";") if pair.partition("=")[0].strip() != TOKEN_COOKIE]
    return ";".join(kept).strip(" ;")


def upstream_request_headers(
    request: HTTPConnection,
    principal: Caller,
    upstream: Upstream,
    identity: IdentityHeaders,
    api_key_header: str,
    is_ours: Callable[[str], bool],
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, forwarding, identity and wardgate's credentials; plus ours."""
    scope = request.scope
    try:
        raw = [(k.decode("latin-1").lower(), v.decode("utf-8")) for k, v in scope["headers"]]
    except UnicodeDecodeError:  # the upstream clients send UTF-8; other bytes would arrive altered
        raise BadRequestError("Header values must be ASCII or UTF-8.", code="header_encoding") from None
    # The first value counts, as with Starlette's Headers.get().
    first: dict[str, str] = {}
    for name, value in raw:
        first.setdefault(name, value)
    dropped = HOP_BY_HOP | FORWARDING | identity.lowered
    if "connection" in first:
        dropped |= _connection_tokens(raw)
    dropped |= {"host", "expect", api_key_header}  # `Expect: 100-continue` was answered to the client
    dropped |= _FRAMING  # set again by the upstream client from the body it sends, never passed on
    authorization = first.get("authorization", "")
    if upstream.strips_authorization or principal.via != "cookie" or is_ours(authorization):
        dropped = dropped | {"authorization"}  # wardgate's credential, or meant for a model API
    headers: list[tuple[str, str]] = []
    for name, value in raw:
        if name in dropped:
            continue
        if name == "cookie":
            value = _without_wardgate_cookie(value)
            if not value:
                continue
        headers.append((name, value))
    client = scope.get("client")
    headers += [
        ("X-Forwarded-For", client[0] if client else ""),
        ("X-Forwarded-Proto", scope.get("scheme", "http")),
        ("X-Forwarded-Host", first.get("host", "")),
    ]
    headers += identity.values(principal)
    headers += list(upstream.inject_headers)
    return headers


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones and any attempt to set wardgate's session cookie."""
    lowered = [(name.lower(), value) for name, value in raw]
    dropped = set(_HOP_BY_HOP_BYTES) | {b"date"}  # the server adds its own Date; two are invalid
    for name, value in lowered:
        if name == b"connection":
            dropped.update(token.strip().lower() for token in value.split(b","))
    return [
        (name, value)
        for name, value in lowered
        if name not in dropped and not (name == b"set-cookie" and _cookie_name(value) in _NOT_SETTABLE)
    ]


def _cookie_name(set_cookie: bytes) -> bytes:
    """The name a browser gives the cookie (RFC 6265bis §5.6): trimmed, and empty without `=`."""
    pair = set_cookie.split(b";", 1)[0]
    return pair.split(b"=", 1)[0].strip() if b"=" in pair else b""


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


class ReverseProxy:
    """Forward one authenticated request to its upstream and relay the answer back."""

    def __init__(
        self,
        client: UpstreamClient,
        identity: IdentityHeaders,
        api_key_header: str,
        is_ours: Callable[[str], bool],
    ) -> None:
        self._client = client
        self.identity = identity
        self.api_key_header = api_key_header.lower()
        self.is_ours = is_ours

    async def forward(self, request: Request, principal: Caller, upstream: Upstream, send: Send) -> None:
        """Send the request upstream (body streamed) and write the answer, or a 502/504, to `send`."""
        scope = request.scope
        scope.setdefault("state", {})[PROXIED_STATE_KEY] = True
        headers = upstream_request_headers(
            request, principal, upstream, self.identity, self.api_key_header, self.is_ours
        )
        url = upstream.target(scope["path"], scope["query_string"].decode("latin-1"))
        method: str = scope["method"]
        # The upstream request's framing comes from how the body arrived, never from headers passed
        # on (those are dropped): the upstream client sets the length, or chunks a stream.
        chunked = header(scope, b"transfer-encoding") is not None  # wins over a length (RFC 9112 §6.3)
        declared = None if chunked else header(scope, b"content-length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        inbound = _Inbound(request.receive, has_body=chunked or declared is not None)
        body: bytes | AsyncIterator[bytes] | None = None
        if length is not None and length <= SMALL_BODY:
            try:
                body = await inbound.read()  # a chat request, say: it leaves in one write with the head
            except _ClientGone:
                return
        elif chunked or declared is not None:
            body = inbound.body()  # an upload: streamed as it arrives, held to its declared length
        cancellation = Cancellation()
        watch = _DisconnectWatch(inbound, cancellation)
        try:
            pending = self._client.request(
                method, url, headers, body, length=length, cancellation=cancellation
            )
            await _answer(request, upstream, pending, cancellation, send)
        finally:
            watch.stop()


class _DisconnectWatch:
    """Cancels the upstream exchange when the client leaves, so the upstream stops working for nobody.

    It starts after `WATCH_AFTER` seconds: a task waiting on `receive` costs about a sixth of a
    quick proxied request, which is over before then; a long answer (a model thinking for minutes,
    a stream) is watched, and a client that left earlier is found at once when the watch starts.
    """

    def __init__(self, inbound: _Inbound, cancellation: Cancellation) -> None:
        self._inbound = inbound
        self._cancellation = cancellation
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._start)

    def _start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await self._inbound.disconnected()
        self._cancellation.cancel()

    def stop(self) -> None:
        """The exchange is over: stop watching."""
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def _answer(
    request: Request,
    upstream: Upstream,
    pending: Awaitable[UpstreamResponse],
    cancellation: Cancellation,
    send: Send,
) -> None:
    """Await the upstream's answer and write it, or the 502/504 that replaces it, to `send`."""
    try:
        answer = await pending
    except _ClientGone:
        return
    except UpstreamTimeoutError:
        log.warning("upstream %s timed out", upstream.name)
        await _refuse(request, send, 504, f"The {upstream.name} service did not answer in time.")
        return
    except UpstreamError as exc:
        if cancellation.cancelled:
            return  # the client left: nobody to answer
        log.warning("upstream %s unavailable (%s)", upstream.name, exc)
        await _refuse(request, send, 502, f"The {upstream.name} service is unavailable.")
        return
    try:
        if _is_small(answer):
            await _send_whole(answer, request, cancellation, send)
        else:
            await _relay(answer, cancellation, send)
    finally:
        answer.close()  # pooled again after a complete exchange, dropped (the upstream sees it) otherwise


async def _refuse(request: Request, send: Send, status: int, detail: str) -> None:
    response: Response = JSONResponse({"detail": detail}, status_code=status)
    await response(request.scope, request.receive, send)


def _is_small(answer: UpstreamResponse) -> bool:
    """A sized answer of at most 64 KiB that is not an event stream: cheaper sent whole than relayed."""
    length = answer.header(b"content-length") or b""
    content_type = answer.header(b"content-type") or b""
    return length.isdigit() and int(length) <= SMALL_ANSWER and b"text/event-stream" not in content_type


def _start(answer: UpstreamResponse) -> Message:
    headers = response_headers(answer.headers)
    if answer.status in (204, 304):  # no body follows, whatever length a 304 announces (RFC 9110 §8.6)
        headers = [(name, value) for name, value in headers if name != b"content-length"]
    return {"type": "http.response.start", "status": answer.status, "headers": headers}


async def _send_whole(
    answer: UpstreamResponse, request: Request, cancellation: Cancellation, send: Send
) -> None:
    try:
        body = await answer.read()  # as sent: still encoded
    except UpstreamError as exc:
        if cancellation.cancelled:
            return
        log.warning("upstream answer broke off (%s)", exc)
        await _refuse(request, send, 502, "The upstream answer broke off.")
        return
    await send(_start(answer))
    await send({"type": "http.response.body", "body": body})


async def _relay(answer: UpstreamResponse, cancellation: Cancellation, send: Send) -> None:
    """Chunks as the upstream sends them, until it ends or the client leaves (which cancels it).

    An upstream that breaks off leaves the response unfinished: the server then closes the
    connection, so the client sees the stream cut short rather than ended.
    """
    await send(_start(answer))
    try:
        async for chunk in answer.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError as exc:
        if not cancellation.cancelled:
            log.warning("upstream stream broke off (%s)", exc)
        return
    await send({"type": "http.response.body", "body": b""})
