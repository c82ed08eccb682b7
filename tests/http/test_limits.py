"""Request body limit: declared and streamed bodies above the limit get a 413."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send
from tests.http.test_coalesced_writes import LIMITS  # the server's connection limits (8 KiB heads)
from tests.servers import served_in_thread

from wardgate.http.middleware.size_limits import BodySizeLimitMiddleware, HeaderSizeLimitMiddleware
from wardgate.http.server import protocol_for

LIMIT = 100
CALLS: list[str] = []


async def _echo(request: Request) -> Response:
    body = await request.body()
    CALLS.append(request.url.path)  # only once the whole body was read
    return Response(body)


def _starlette() -> BodySizeLimitMiddleware:
    return BodySizeLimitMiddleware(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), LIMIT)


def _fastapi() -> BodySizeLimitMiddleware:
    api = FastAPI()

    @api.post("/echo")
    async def echo(request: Request) -> Response:
        return await _echo(request)

    return BodySizeLimitMiddleware(api, LIMIT)


async def _chunks(total: int, size: int = 30) -> AsyncIterator[bytes]:
    for start in range(0, total, size):
        yield b"x" * min(size, total - start)


async def _post(app: BodySizeLimitMiddleware, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    CALLS.clear()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        return await client.post("/echo", content=content)


@pytest.mark.parametrize("size", [0, 1, LIMIT])
@pytest.mark.anyio
async def test_bodies_up_to_the_limit_pass(size: int) -> None:
    response = await _post(_starlette(), b"x" * size)
    assert response.status_code == 200
    assert response.content == b"x" * size


@pytest.mark.anyio
async def test_declared_oversize_body_is_refused_before_the_app_runs() -> None:
    response = await _post(_starlette(), b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json() == {"detail": f"Request body too large (limit {LIMIT} bytes)"}
    assert response.headers["connection"] == "close"
    assert CALLS == []


@pytest.mark.anyio
async def test_streamed_body_within_the_limit_passes() -> None:
    response = await _post(_starlette(), _chunks(LIMIT))
    assert response.status_code == 200
    assert len(response.content) == LIMIT


@pytest.mark.parametrize("make_app", [_starlette, _fastapi])
@pytest.mark.anyio
async def test_streamed_oversize_body_is_refused(make_app: Any) -> None:
    response = await _post(make_app(), _chunks(LIMIT * 10))
    assert response.status_code == 413
    assert CALLS == []  # the route never got the whole body


@pytest.mark.anyio
async def test_fastapi_renders_the_streamed_refusal_as_json() -> None:
    response = await _post(_fastapi(), _chunks(LIMIT * 10))
    assert response.json() == {"detail": "Content Too Large"}


def _scope(headers: list[tuple[bytes, bytes]], http_version: str | None = None) -> dict[str, Any]:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return scope if http_version is None else {**scope, "http_version": http_version}


async def _run(
    app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes], http_version: str | None = None
) -> list[Message]:
    inbox: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await BodySizeLimitMiddleware(app, LIMIT)(_scope(headers, http_version), receive, send)
    return sent


async def _read_all(scope: Scope, receive: Receive, send: Send) -> None:
    """A bare ASGI app without exception handlers: the limit's own 413 answers."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"read"})


@pytest.mark.anyio
async def test_body_longer_than_its_declared_length_is_counted() -> None:
    sent = await _run(_read_all, [(b"content-length", b"10")], [b"x" * 60, b"x" * 60])
    assert sent[0]["status"] == 413


@pytest.mark.parametrize(
    "framing",
    [
        [(b"content-length", b"10"), (b"content-length", b"10")],
        [(b"content-length", b"10"), (b"transfer-encoding", b"chunked")],
    ],
    ids=["two-lengths", "length-and-chunked"],
)
@pytest.mark.anyio
async def test_an_http1_body_of_ambiguous_length_is_counted(framing: list[tuple[bytes, bytes]]) -> None:
    """Only one declared length and nothing else lets an HTTP/1 body pass uncounted: the server
    holds such a body to it (`test_an_http1_body_ends_at_its_declared_length`)."""
    sent = await _run(_read_all, framing, [b"x" * 60, b"x" * 60], http_version="1.1")
    assert sent[0]["status"] == 413


def test_an_http1_body_ends_at_its_declared_length() -> None:
    """What lets a declared length within the limit pass uncounted, on wardgate's own server: the
    app reads the declared bytes and no more; what follows is read as the next request, and
    refused as the bad request it is."""
    seen: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        seen.append(size)
        await PlainTextResponse(str(size))(scope, receive, send)

    with (
        served_in_thread(BodySizeLimitMiddleware(app, LIMIT), protocol_for(LIMITS)) as port,
        socket.create_connection(("127.0.0.1", port), timeout=5) as client,
    ):
        client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n" + b"x" * (10 * LIMIT))
        answers = b""
        while chunk := client.recv(65536):
            answers += chunk
    assert seen == [10]
    # The rest, parsed as a request, is no HTTP: 400, and the connection closes (before or after the
    # app's answer, as the server gets to it: the app read its ten bytes either way).
    assert b"HTTP/1.1 400 " in answers


@pytest.mark.anyio
async def test_a_length_with_thousands_of_leading_zeros_is_read_as_its_number() -> None:
    """The parser takes `Content-Length: 000…05` as 5; Python refuses to read a number of more than
    4,300 digits, and the ValueError was a 500 with a traceback, for anyone."""
    zeros = b"0" * 5000
    assert (await _run(_read_all, [(b"content-length", zeros + b"5")], [b"x" * 5], "1.1"))[0]["status"] == 200
    refused = await _run(_read_all, [(b"content-length", zeros + b"101")], [b"x" * 101], "1.1")
    assert refused[0]["status"] == 413  # over the limit as declared: refused before the app


@pytest.mark.parametrize("length", [b"abc", b"-1", b"\xd9\xa1"])
@pytest.mark.anyio
async def test_malformed_content_length_falls_back_to_counting(length: bytes) -> None:
    assert (await _run(_read_all, [(b"content-length", length)], [b"x" * 10]))[0]["status"] == 200
    assert (await _run(_read_all, [(b"content-length", length)], [b"x" * 200]))[0]["status"] == 413


@pytest.mark.anyio
async def test_after_the_response_started_the_error_propagates() -> None:
    async def streaming_echo(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            await send({"type": "http.response.body", "body": message.get("body", b""), "more_body": True})

    with pytest.raises(HTTPException) as caught:
        await _run(streaming_echo, [], [b"x" * 60, b"x" * 60])
    assert caught.value.status_code == 413


@pytest.mark.anyio
async def test_websockets_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    big = [(b"content-length", b"100000")]
    await BodySizeLimitMiddleware(app, LIMIT)({"type": "websocket", "headers": big}, _never, _never_send)
    assert seen == ["websocket"]


async def _never() -> Message:
    raise AssertionError("not called")


async def _never_send(message: Message) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize("limit", [-1, True, 1.5])
def test_bad_limit_is_refused(limit: Any) -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        BodySizeLimitMiddleware(_read_all, limit)


def test_oversized_or_too_many_headers_get_431() -> None:
    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    client = TestClient(HeaderSizeLimitMiddleware(ok, 4096, max_header_count=20))  # no lifespan
    assert client.get("/", headers={"x-small": "a" * 100}).status_code == 200
    big = client.get("/", headers={"x-big": "a" * 5000})
    assert big.status_code == 431
    assert big.json() == {"detail": "Request headers too large (limit 4096 bytes, 20 fields)"}
    many = client.get("/", headers={f"x-h{i}": "v" for i in range(30)})
    assert many.status_code == 431
