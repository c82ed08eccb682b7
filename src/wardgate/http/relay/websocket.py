"""WebSocket proxying: admitted at the upgrade, closed when the caller no longer would be.

Open WebUI's `/ws/socket.io` kept sockets of revoked users alive (CVE-2026-44553). Here every relayed
socket runs the whole admission again once a second — credential, account state, role and group
rules, key scopes — and is closed with 1008 (policy violation) as soon as it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from starlette.status import WS_1008_POLICY_VIOLATION
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidHeader, InvalidURI
from websockets.headers import parse_subprotocol

from wardgate.http.relay.streaming import ReverseProxy
from wardgate.identity.authentication import Caller
from wardgate.proxy.identity import upstream_request_headers
from wardgate.proxy.upstreams import Upstream

log = logging.getLogger(__name__)
RECHECK_SECONDS = 1.0
_PROTOCOL_ERROR = 1002  # RFC 6455 §7.4.1; a handshake closed before it is accepted is answered 403
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "origin",
    }
)


async def relay_websocket(
    websocket: WebSocket,
    principal: Caller,
    upstream: Upstream,
    proxy: ReverseProxy,
    still_admitted: Callable[[], Awaitable[bool]],
) -> None:
    """Connect upstream with the user's identity, then pump frames both ways until one side ends."""
    headers = [
        (k, v)
        for k, v in upstream_request_headers(websocket.scope, principal, upstream, proxy.rules, proxy.is_ours)
        if k.lower() not in _HANDSHAKE
    ]
    query = websocket.scope["query_string"].decode("latin-1")
    url = upstream.target(websocket.scope["path"], query).replace("http", "ws", 1)
    offered = websocket.headers.getlist("sec-websocket-protocol")
    try:
        protocols = parse_subprotocol(", ".join(offered)) if offered else []
    except InvalidHeader:  # not a list of tokens (RFC 6455 §4.1): the upstream client would raise
        await websocket.close(code=_PROTOCOL_ERROR)
        return
    try:
        upstream_socket = await connect(
            url,
            additional_headers=headers,
            subprotocols=protocols or None,
            open_timeout=10,
            max_size=16 * 1024 * 1024,
        )
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        log.warning("websocket upstream %s unavailable (%s)", upstream.name, type(exc).__name__)
        await websocket.close(code=1011)
        return
    async with upstream_socket:
        await websocket.accept(subprotocol=upstream_socket.subprotocol)
        await _pump(websocket, upstream_socket, still_admitted)


async def _pump(
    client: WebSocket, upstream: ClientConnection, still_admitted: Callable[[], Awaitable[bool]]
) -> None:
    tasks = [
        asyncio.create_task(coro)
        for coro in (
            _client_to_upstream(client, upstream),
            _upstream_to_client(upstream, client),
            _watch(still_admitted),
        )
    ]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError):
            await task
    revoked = any(t.result() == "revoked" for t in done if not t.cancelled() and t.exception() is None)
    with contextlib.suppress(RuntimeError, ConnectionClosed, WebSocketDisconnect):  # it may be gone
        await client.close(code=WS_1008_POLICY_VIOLATION if revoked else 1000)
    await upstream.close()


async def _client_to_upstream(client: WebSocket, upstream: ClientConnection) -> str:
    with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
            if data is not None:
                await upstream.send(data)
    return "client closed"


async def _upstream_to_client(upstream: ClientConnection, client: WebSocket) -> str:
    with contextlib.suppress(ConnectionClosed, WebSocketDisconnect):
        async for data in upstream:
            if isinstance(data, bytes):
                await client.send_bytes(data)
            else:
                await client.send_text(data)
    return "upstream closed"


async def _watch(still_admitted: Callable[[], Awaitable[bool]]) -> str:
    # A poll of the in-memory view (no I/O unless it is stale): revocations from other instances
    # land in it within the sync interval, and a once-a-second check bounds how long a socket stays
    # open once its caller may no longer reach the upstream.
    while await still_admitted():  # noqa: ASYNC110 - a poll of the view, not a wait for an event
        await asyncio.sleep(RECHECK_SECONDS)
    return "revoked"
