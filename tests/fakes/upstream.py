"""A small OpenAI- and Ollama-compatible streaming server with a WebSocket echo, for proxy tests.

Run as a real process: `python -m tests.fakes.upstream PORT`. It never echoes credentials back; it
reports only facts about them (seen or not, matching or not), so a leak in a test can only come
from wardgate.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

UPSTREAM_KEY = "sk-upstream-secret-never-shown-to-clients"
IDENTITY = ("x-forwarded-email", "x-forwarded-name", "x-forwarded-groups", "x-forwarded-role")
STATE: dict[str, object] = {"cancelled": 0, "completed": 0, "abandoned": 0, "smuggled": 0}


async def chat_completions(request: Request) -> StreamingResponse | JSONResponse:
    """OpenAI-style SSE: one `data:` event per chunk, spaced in time, then `[DONE]`."""
    body = await request.json()
    chunks, gap = int(body.get("chunks", 5)), float(body.get("gap", 0.2))

    async def events() -> AsyncIterator[bytes]:
        try:
            for i in range(chunks):
                delta = {"choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]}
                yield f"data: {json.dumps(delta)}\n\n".encode()
                await asyncio.sleep(gap)
            yield b"data: [DONE]\n\n"
            STATE["completed"] = int(STATE["completed"]) + 1  # type: ignore[call-overload]
        except asyncio.CancelledError:
            STATE["cancelled"] = int(STATE["cancelled"]) + 1  # type: ignore[call-overload]
            raise

    return StreamingResponse(events(), media_type="text/event-stream")


async def ollama_chat(request: Request) -> StreamingResponse:
    """Ollama-style NDJSON stream."""
    body = await request.json()
    chunks, gap = int(body.get("chunks", 5)), float(body.get("gap", 0.2))

    async def lines() -> AsyncIterator[bytes]:
        for i in range(chunks):
            yield (
                json.dumps({"message": {"role": "assistant", "content": f"w{i}"}, "done": False}) + "\n"
            ).encode()
            await asyncio.sleep(gap)
        yield (json.dumps({"done": True}) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def cgi_view(request: Request) -> dict[str, str]:
    """The headers as a WSGI or CGI application reads them: `-` and `_` both become `_`, repeats joined."""
    seen: dict[str, list[str]] = {}
    for name, value in request.headers.raw:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        seen.setdefault(key, []).append(value.decode("latin-1"))
    return {key: ",".join(values) for key, values in seen.items()}


async def facts(request: Request) -> JSONResponse:
    """What the upstream saw, as facts: identity headers, forwarding headers, credential checks."""
    headers = request.headers
    cookies = request.cookies
    cgi = cgi_view(request)
    return JSONResponse(
        {
            "identity": {name: headers.get(name) for name in IDENTITY},
            "cgi_identity": {
                key: cgi.get(key) for key in (f"HTTP_{name.upper().replace('-', '_')}" for name in IDENTITY)
            },
            "header_names": sorted({name.decode("latin-1").lower() for name, _ in request.headers.raw}),
            "forwarded_for": headers.get("x-forwarded-for"),
            "forwarded_proto": headers.get("x-forwarded-proto"),
            "forwarded_host": headers.get("x-forwarded-host"),
            "host": headers.get("host"),
            "authorization_is_upstream_key": headers.get("authorization") == f"Bearer {UPSTREAM_KEY}",
            "authorization_present": "authorization" in headers,
            "authorization_scheme": (headers.get("authorization") or " ").split(" ")[0],
            "x_api_key_present": "x-api-key" in headers,
            "token_cookie_present": "token" in cookies,
            "other_cookie": cookies.get("app"),
            "custom_hop_header": headers.get("x-hop"),
            "content_type": headers.get("content-type"),
            "user_agent": headers.get("user-agent"),
            "connection": headers.get("connection"),
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "body_length": len(await request.body()),
        }
    )


async def headers(request: Request) -> JSONResponse:
    """Every header as received, in order, repeats kept (forward-auth tests read the identity)."""
    return JSONResponse([[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers.raw])


async def state(_request: Request) -> JSONResponse:
    return JSONResponse(STATE)


async def slow(_request: Request) -> PlainTextResponse:
    await asyncio.sleep(5)
    return PlainTextResponse("late")


async def think(request: Request) -> JSONResponse:
    """A non-streamed answer that takes seconds (a model thinking); counts requests abandoned meanwhile."""
    for _ in range(int(float(request.query_params.get("seconds", "3")) / 0.05)):
        if await request.is_disconnected():
            STATE["abandoned"] = int(STATE["abandoned"]) + 1  # type: ignore[call-overload]
            return JSONResponse({"abandoned": True})
        await asyncio.sleep(0.05)
    return JSONResponse({"answer": 42})


async def broken_stream(_request: Request) -> StreamingResponse:
    """Two chunks, then the upstream dies mid-answer (its server drops the connection)."""

    async def lines() -> AsyncIterator[bytes]:
        yield b"data: one\n\n"
        await asyncio.sleep(0.05)
        yield b"data: two\n\n"
        await asyncio.sleep(0.05)
        raise RuntimeError("the model crashed")

    return StreamingResponse(lines(), media_type="text/event-stream")


async def smuggled(_request: Request) -> PlainTextResponse:
    """Reached only by a request hidden in another's body: counts them."""
    STATE["smuggled"] = int(STATE["smuggled"]) + 1  # type: ignore[call-overload]
    return PlainTextResponse("smuggled")


async def not_modified(_request: Request) -> Response:
    """A 304 announcing the length of the representation it does not send (RFC 9110 §8.6)."""
    return Response(status_code=304, headers={"Content-Length": "1234", "ETag": '"v1"'})


async def redirect(_request: Request) -> RedirectResponse:
    return RedirectResponse("/elsewhere", status_code=302)


async def set_cookie(_request: Request) -> PlainTextResponse:
    response = PlainTextResponse("cookies")
    response.set_cookie("token", "upstream-token-must-not-overwrite-wardgate")
    response.set_cookie("app", "upstream-cookie")
    return response


async def cors_everyone(request: Request) -> JSONResponse:
    """Open WebUI's default: any Origin reflected, with credentials."""
    origin = request.headers.get("origin", "*")
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Expose-Headers": "X-Secret-Header",
    }
    if request.method == "OPTIONS":
        headers |= {"Access-Control-Allow-Methods": "GET, POST, DELETE", "Access-Control-Allow-Headers": "*"}
        return JSONResponse({"preflight": "answered by the upstream"}, headers=headers)
    return JSONResponse({"private": "data for the signed-in person"}, headers=headers)


async def echo(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[-1] if offered else None)  # the last: all were offered
    email = websocket.headers.get("x-forwarded-email", "")
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"{email}:{text}")
    except WebSocketDisconnect:
        return


ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/stream", chat_completions, methods=["POST"]),  # the same, on a path that is not a model call
    Route("/api/chat", ollama_chat, methods=["POST"]),
    Route("/state", state),
    Route("/echo-headers", headers),
    Route("/slow", slow),
    Route("/think", think),
    Route("/smuggled", smuggled),
    Route("/broken-stream", broken_stream),
    Route("/not-modified", not_modified),
    Route("/redirect", redirect),
    Route("/set-cookie", set_cookie),
    Route("/cors-everyone", cors_everyone, methods=["GET", "OPTIONS"]),
    WebSocketRoute("/ws/echo", echo),
    Route("/{path:path}", facts, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
app = Starlette(routes=ROUTES)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
