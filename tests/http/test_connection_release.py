"""A closed connection is freed when it closes, by reference counting: nothing of it waits for
the garbage collector. Each connection's clocks held bound methods of its protocol, a reference
cycle that kept the protocol, its transport, its request cycle and everything the request held
(the caller's identity included) until a collection; under a stream of short connections those
collections stopped the event loop for about 29 ms every 1,500 connections (`bench/proxy.py`'s
streams, Connection: close)."""

from __future__ import annotations

import gc
import socket
import struct
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send
from tests.http.test_coalesced_writes import LIMITS  # the same connection limits (8 KiB heads)
from tests.servers import served_in_thread
from websockets.sync.client import connect

from wardgate.http.server import protocol_for


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await receive()  # until the client closes
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def served() -> Iterator[tuple[int, list[weakref.ref[Any]]]]:
    """wardgate's protocol on uvicorn and uvloop in a thread; the port and a weak reference to
    each connection's protocol."""
    made: list[weakref.ref[Any]] = []
    base = protocol_for(LIMITS)

    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    with served_in_thread(_answer, Watched) as port:
        yield port, made


@contextmanager
def _collector_off() -> Iterator[None]:
    """Only reference counting frees anything in the block (the collector is on again after it)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _freed_without_collection(made: list[weakref.ref[Any]], count: int) -> int:
    """How many of the connections' protocols are gone, waiting up to 5 s for the server to see
    the connections close (the collector is off: only reference counting frees anything)."""
    deadline = time.monotonic() + 5
    while True:
        freed = sum(1 for ref in made if ref() is None)
        if freed == count or time.monotonic() > deadline:
            return freed
        time.sleep(0.02)


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_closed_connection_is_freed_without_the_garbage_collector(
    served: tuple[int, list[weakref.ref[Any]]], reset: bool
) -> None:
    port, made = served
    with _collector_off():
        for _ in range(10):
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
            if reset:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        assert len(made) == 10
        assert _freed_without_collection(made, 10) == 10


def test_a_closed_websocket_is_freed_without_the_garbage_collector(
    served: tuple[int, list[weakref.ref[Any]]],
) -> None:
    """The HTTP protocol hands over to the WebSocket protocol and hooks its `connection_lost` to
    release the client's share: the hook held both protocols, a cycle of its own."""
    port, made = served
    with _collector_off():
        for _ in range(5):
            with connect(f"ws://127.0.0.1:{port}/", open_timeout=5) as socket_:
                socket_.close()
        assert len(made) == 5
        assert _freed_without_collection(made, 5) == 5
