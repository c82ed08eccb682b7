"""One client cannot stall the server: bounded request heads, head timeouts, idle connections, and a cap
on connections per client, each tried against a real `wardgate serve` over TCP."""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SECRET
from tests.servers import fake_upstream_process, wardgate_process
from wardgate.http.server import MAX_PIPELINED

pytestmark = pytest.mark.slow
HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
SEND_TIMEOUT = 1.0
KEEP_ALIVE = 1
PER_CLIENT = 12


def _short_timeouts(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a wardgate whose head, body, send and keep-alive clocks run out fast."""
    return {
        "DATA_DIR": str(data_dir),
        "WEBUI_SECRET_KEY": SECRET,
        "CLIENT_HEADER_TIMEOUT": str(HEAD_TIMEOUT),
        "CLIENT_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "SEND_TIMEOUT": str(SEND_TIMEOUT),
        "KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """wardgate with short timeouts; loopback is not a trusted proxy here, so it is counted."""
    env = _short_timeouts(
        tmp_path_factory.mktemp("hostile"),
        MAX_CONNECTIONS_PER_IP=str(PER_CLIENT),
        FORWARDED_ALLOW_IPS="10.255.255.1",
    )
    with wardgate_process(env) as base:
        yield base, int(base.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def relaying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """The same short timeouts in front of the fake app (its `/think` answers after some seconds):
    the port, and a session token."""
    with (
        fake_upstream_process() as app,
        wardgate_process(_short_timeouts(tmp_path_factory.mktemp("relaying"), UPSTREAM_URL=app)) as base,
    ):
        account = {"name": "Ada", "email": "ada@example.com", "password": "correct-horse-battery-9"}
        token = httpx.post(f"{base}/api/v1/auths/signup", json=account).json()["token"]
        yield int(base.rsplit(":", 1)[1]), token


def _think(token: str, seconds: float) -> bytes:
    """A request the app answers after `seconds` (longer than the head and body timeouts)."""
    return (
        f"GET /think?seconds={seconds} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _answer(sock: socket.socket) -> bytes:
    """What the server wrote before closing (b"" when it closed without a word)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def _one_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length, however the network splits it."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _send_until_refused(sock: socket.socket, chunk: bytes, times: int, pause: float = 0.0) -> int | None:
    """Send `chunk` up to `times` times; the bytes sent when the server closed on us, None if it never did."""
    sent = 0
    for _ in range(times):
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += len(chunk)
        time.sleep(pause)
    return None


def _health_latencies(base: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            started = time.monotonic()
            assert client.get(f"{base}/health").status_code == 200
            out.append(time.monotonic() - started)
            time.sleep(0.01)


def test_a_huge_header_is_refused_as_the_limit_is_crossed_and_nobody_else_waits(
    server: tuple[str, int],
) -> None:
    """64 MiB of header: answered 431 after the first 32 KiB, the rest never read; /health unharmed."""
    base, port = server
    stop, latencies = threading.Event(), list[float]()
    watcher = threading.Thread(target=_health_latencies, args=(base, stop, latencies))
    watcher.start()
    try:
        while len(latencies) < 3:  # the other client is being served before the attack begins
            time.sleep(0.01)
        sock = _connect(port)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = _send_until_refused(sock, b"a" * 65536, 1024)  # up to 64 MiB
        answer = _answer(sock)
        sock.close()
        time.sleep(0.3)  # and after it
    finally:
        stop.set()
        watcher.join(10)
    assert sent is not None, "the server read 64 MiB of header"
    assert sent < 8 * 1024 * 1024, sent  # only what the kernel's buffers took before the close
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert b'"detail"' in answer
    assert len(latencies) >= 6 and max(latencies) < 0.5, latencies


def test_a_head_trickled_line_by_line_is_cut_off_after_the_head_timeout(server: tuple[str, int]) -> None:
    """Slowloris: a header line every 0.3 s never completes the head; the connection ends at the timeout."""
    _, port = server
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert _send_until_refused(sock, b"X-Slow: 1\r\n", 40, pause=0.3) is not None  # up to 12 s
    elapsed = time.monotonic() - started
    assert HEAD_TIMEOUT <= elapsed < HEAD_TIMEOUT + 2.5, elapsed
    sock.close()


@pytest.mark.parametrize("pipelined", [False, True], ids=["after-a-pause", "pipelined"])
def test_a_later_head_trickled_on_a_kept_connection_is_cut_off_too(
    server: tuple[str, int], pipelined: bool
) -> None:
    """A head that comes whole needs no clock (the server starts none); one that comes in pieces on a
    kept-alive connection, after a served request or pipelined behind it, gets the head timeout."""
    _, port = server
    sock = _connect(port)
    first = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    if pipelined:
        sock.sendall(first + b"GET /health HTTP/1.1\r\n")
        assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
    else:
        sock.sendall(first)
        assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(KEEP_ALIVE / 4)
        sock.sendall(b"GET /health HTTP/1.1\r\n")
    started = time.monotonic()
    assert _send_until_refused(sock, b"X-Slow: 1\r\n", 40, pause=0.3) is not None  # up to 12 s
    assert time.monotonic() - started < HEAD_TIMEOUT + 2.5
    sock.close()


@pytest.mark.parametrize("empty", [b"\r\n", b"\n", b"\r\n\r\n"], ids=["crlf", "lf", "two-crlf"])
def test_empty_lines_after_an_answer_do_not_hold_the_connection(
    server: tuple[str, int], empty: bytes
) -> None:
    """Empty lines between requests begin no head (the parser skips them), yet they stop the
    keep-alive clock: the head clock must end the connection instead."""
    _, port = server
    sock = _connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
    sock.sendall(empty)
    started = time.monotonic()
    _answer(sock)  # a 408, or a plain close
    assert time.monotonic() - started < HEAD_TIMEOUT + 2
    sock.close()


def _post_head(length: int) -> bytes:
    return (
        b"POST /api/v1/auths/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


def test_a_body_that_stops_coming_is_refused_and_the_connection_closed(server: tuple[str, int]) -> None:
    """A slow POST: the head announces 1,000 bytes, 10 come, then nothing. Without a body clock the
    request's task and the connection wait for the rest for ever."""
    _, port = server
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(_post_head(1000) + b'{"email":"')
    answer = _answer(sock)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert b"The request body stopped arriving" in answer
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 2, elapsed
    sock.close()


def test_a_body_announced_but_never_sent_is_refused(server: tuple[str, int]) -> None:
    _, port = server
    sock = _connect(port)
    started = time.monotonic()
    sock.sendall(_post_head(50))
    assert _answer(sock).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < BODY_TIMEOUT + 2
    sock.close()


def test_a_slow_body_that_keeps_coming_is_served(server: tuple[str, int]) -> None:
    """The clock runs between reads, not over the whole body: 3 s of body in pieces 0.3 s apart."""
    _, port = server
    body = b'{"email":"nobody@example.com","password":"wrong-password-123"}'
    sock = _connect(port)
    sock.sendall(_post_head(len(body)))
    for piece in (body[i : i + 6] for i in range(0, len(body), 6)):
        time.sleep(BODY_TIMEOUT * 0.3)
        sock.sendall(piece)
    answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:100]  # the route's own refusal of a wrong password
    assert not answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    sock.close()


def test_an_empty_line_during_a_long_answer_does_not_cut_it(relaying: tuple[int, str]) -> None:
    """Some clients send an empty line after a request (RFC 9112 §2.2 lets a server skip it): the
    head clock it starts must not write a 408 into the answer still being made."""
    port, token = relaying
    sock = _connect(port)
    sock.sendall(_think(token, 2.5))
    time.sleep(0.2)
    sock.sendall(b"\r\n")
    answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert b'"answer":42' in answer.replace(b" ", b"")
    sock.close()


def test_a_stalled_body_pipelined_behind_a_long_answer_does_not_cut_it(relaying: tuple[int, str]) -> None:
    """The body clock of a request queued behind another must not answer 408 in the other's place."""
    port, token = relaying
    sock = _connect(port)
    sock.sendall(_think(token, 2.5) + _post_head(100) + b'{"email":"')
    answer = _one_response(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert b'"answer":42' in answer.replace(b" ", b"")
    started = time.monotonic()
    _answer(sock)  # the stalled one: a 408, or a close
    assert time.monotonic() - started < BODY_TIMEOUT + 2
    sock.close()


def test_a_body_finished_after_an_early_answer_does_not_hold_the_connection(
    server: tuple[str, int],
) -> None:
    """Answered (404) before its body was read, the client sends the rest and falls silent: those
    bytes stopped the keep-alive clock, so another must end the connection."""
    _, port = server
    sock = _connect(port)
    sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    assert _one_response(sock).startswith(b"HTTP/1.1 404 ")
    sock.sendall(b"x" * 990)
    started = time.monotonic()
    _answer(sock)
    assert time.monotonic() - started < HEAD_TIMEOUT + KEEP_ALIVE + 2
    sock.close()


def _stream_request(token: str, chunks: int) -> bytes:
    """The app's SSE stream of `chunks` events (about 70 bytes each), as fast as it can."""
    body = f'{{"chunks": {chunks}, "gap": 0}}'.encode()
    head = (
        f"POST /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _small_window(port: int) -> socket.socket:
    """A connection whose receive buffer is small, so that an unread answer backs up into wardgate."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_all(sock: socket.socket, pause: float = 0.0, size: int = 65536) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(size):
            data += chunk
            if b"data: [DONE]" in data[-200:]:
                break
            time.sleep(pause)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return data


def test_an_answer_the_client_stops_reading_is_cut(relaying: tuple[int, str]) -> None:
    """A client that asks for a long answer and reads nothing must not hold the connection, the
    answer's task and its buffered bytes for ever: after SEND_TIMEOUT without progress, it is cut."""
    port, token = relaying
    sock = _small_window(port)
    sock.sendall(_stream_request(token, 200_000))  # about 14 MB
    time.sleep(SEND_TIMEOUT * 3)
    received = _read_all(sock)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert b"data: [DONE]" not in received
    assert len(received) < 8 * 1024 * 1024, len(received)
    sock.close()


def test_a_client_that_reads_slowly_gets_its_whole_answer(relaying: tuple[int, str]) -> None:
    """The clock measures progress, not speed: 8 KiB every 0.1 s for several times SEND_TIMEOUT."""
    port, token = relaying
    sock = _small_window(port)
    sock.sendall(_stream_request(token, 3_000))  # about 210 KB
    received = _read_all(sock, pause=0.1, size=8192)
    assert b"data: [DONE]" in received
    sock.close()


@pytest.mark.parametrize(
    "extra",
    [
        b"Content-Length: 5\r\n\r\nhello",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"".join(b"X-Field-%d: x\r\n" % i for i in range(200)) + b"\r\n",
    ],
    ids=["body", "chunked-body", "200-fields"],
)
def test_a_websocket_handshake_the_socket_layer_cannot_read_is_refused(
    server: tuple[str, int], extra: bytes
) -> None:
    """The WebSocket library refused such a head without a word and uvicorn passed nothing on:
    the connection stayed open and unanswered for ever (no clock runs once a connection is
    handed over)."""
    _, port = server
    sock = _connect(port)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra
    )
    started = time.monotonic()
    answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"handshake" in answer
    assert time.monotonic() - started < 2
    sock.close()


def test_a_connection_that_sends_nothing_is_closed(server: tuple[str, int]) -> None:
    _, port = server
    sock = _connect(port)
    started = time.monotonic()
    assert _answer(sock) == b""  # closed without an answer: nothing was asked
    assert time.monotonic() - started < HEAD_TIMEOUT + 2
    sock.close()


def test_a_slow_head_that_does_arrive_in_time_is_served(server: tuple[str, int]) -> None:
    _, port = server
    sock = _connect(port)
    for line in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        sock.sendall(line)
        time.sleep(HEAD_TIMEOUT / 5)
    assert _answer(sock).startswith(b"HTTP/1.1 200 ")
    sock.close()


def test_an_idle_keep_alive_connection_closes(server: tuple[str, int]) -> None:
    _, port = server
    sock = _connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = _one_response(sock)  # head and body may come in separate reads
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    assert _answer(sock) == b""
    assert time.monotonic() - started < KEEP_ALIVE + 1.5
    sock.close()


def _statuses(sock: socket.socket, count: int) -> list[bytes]:
    """The status lines of the next `count` answers (each with a Content-Length), read from one
    stream however they are packed; fewer when the server closes first."""
    data, statuses = b"", []
    while len(statuses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end]
            found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            end = head_end + 4 + (int(found.group(1)) if found else 0)
            if len(data) >= end:
                statuses.append(head.split(b"\r\n", 1)[0])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return statuses


def test_pipelined_requests_together_larger_than_the_head_limit_are_all_answered(
    server: tuple[str, int],
) -> None:
    """A read holding many small pipelined requests, together over the head limit (32 KiB), was
    answered 431 at the head the limit cut through, though no head was large."""
    _base, port = server
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n"
    sock = _connect(port)
    sock.sendall(request * 90)  # 38 KiB in one write
    statuses = _statuses(sock, 90)
    sock.close()
    assert statuses == [b"HTTP/1.1 200 OK"] * 90, statuses[-3:]


def test_requests_pipelined_past_the_limit_are_not_read(server: tuple[str, int]) -> None:
    """Found in review: every request read ahead of its answer was queued, 14,500 of them (30 MB)
    from one read of tiny heads, and more with each answer. Now the first one and 100 queued behind
    it are answered, then the connection closes: the client asks the rest again (RFC 9112 §9.3.2)."""
    _base, port = server
    sock = _connect(port)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3000)  # 108 KiB in one write
    statuses = _statuses(sock, 3000)
    sock.close()
    assert set(statuses) == {b"HTTP/1.1 200 OK"}
    # 101 when the kernel hands the write over in one read, as on loopback; a few more at most if
    # an answer goes out between two reads
    assert 1 + MAX_PIPELINED <= len(statuses) <= 2 * (1 + MAX_PIPELINED), len(statuses)


def test_a_large_head_pipelined_behind_small_ones_is_still_refused(server: tuple[str, int]) -> None:
    """The heads before it are answered; the one that crosses the limit gets its 431."""
    _base, port = server
    small = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    sock = _connect(port)
    sock.sendall(small * 10 + b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000)
    statuses = _statuses(sock, 11)
    sock.close()
    assert statuses == [b"HTTP/1.1 200 OK"] * 10 + [b"HTTP/1.1 431 Request Header Fields Too Large"]


def test_a_large_head_right_after_a_body_in_the_same_read_is_refused(server: tuple[str, int]) -> None:
    """Found in review: after a body ended inside a read, the head that followed it in that read
    was parsed whole, however large (the limit counted only heads that began a read); only the
    application's header check refused it then, once it was all in memory. Now the server does,
    as the limit is crossed (its own 431, and the connection closed)."""
    _base, port = server
    sock = _connect(port)
    sock.sendall(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
    time.sleep(0.2)  # read on its own: the next read begins with the body
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + b"a" * 40_000
    sock.sendall(b"x" + big + b"\r\n\r\n")
    answer = _answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"HTTP/1.1 431 " in answer and b"Request header fields too large" in answer, answer[-200:]


def test_chunked_trailers_are_bounded(server: tuple[str, int]) -> None:
    """Found in review: a chunked body's trailers were read without limit, each added to the
    headers of the request being served (400,000 of them from 2 MB). A small trailer is dropped;
    endless ones are cut off at the head limit."""
    _base, port = server
    head = b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n"
    sock = _connect(port)
    sock.sendall(head + b"X-Trailer: 1\r\n\r\n")
    assert _statuses(sock, 1) == [b"HTTP/1.1 405 Method Not Allowed"]
    sock.close()
    sock = _connect(port)
    sock.sendall(head)
    sent = _send_until_refused(sock, b"X: a\r\n" * 1000, 2000)  # up to 12 MB of trailer lines
    answer = _answer(sock)
    sock.close()
    assert sent is not None and sent < 8 * 1024 * 1024, sent
    # Answered before the trailers crossed the limit (then closed), or refused first: either way,
    # one answer and the end of the connection.
    assert answer.startswith((b"HTTP/1.1 405 ", b"HTTP/1.1 431 ")), answer[:80]


def test_a_large_body_arriving_with_its_head_is_not_mistaken_for_a_large_head(
    server: tuple[str, int],
) -> None:
    """The head limit counts the head only: a 1 MiB body sent in the same writes is the body's business."""
    base, port = server
    body = b'{"name": "x", "email": "not an email", "password": "' + b"p" * (1024 * 1024) + b'"}'
    head = (
        b"POST /api/v1/auths/signup HTTP/1.1\r\nHost: " + base.removeprefix("http://").encode() + b"\r\n"
        b"Content-Type: application/json\r\nOrigin: " + base.encode() + b"\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    sock = _connect(port)
    sock.sendall(head + body)
    answer = _answer(sock)
    sock.close()
    assert answer.startswith((b"HTTP/1.1 422 ", b"HTTP/1.1 400 ", b"HTTP/1.1 413 ")), answer[:80]


def test_one_client_cannot_hold_more_than_its_share_of_connections(server: tuple[str, int]) -> None:
    base, port = server
    held = [_connect(port) for _ in range(PER_CLIENT)]
    try:
        for sock in held:  # keep them busy (not idle) so the head timeout does not end them meanwhile
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        extra = _connect(port)
        started = time.monotonic()
        assert _answer(extra) == b""  # closed at once
        assert time.monotonic() - started < 0.5
        extra.close()
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)  # the server sees the closes
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200  # the share is free again


def test_the_limits_are_per_process_and_do_not_slow_a_normal_client(server: tuple[str, int]) -> None:
    base, _ = server
    with httpx.Client(timeout=5) as client:
        timings = []
        for _ in range(50):
            started = time.monotonic()
            assert client.get(f"{base}/health").status_code == 200
            timings.append(time.monotonic() - started)
    assert statistics.median(timings) < 0.05


def test_trusted_proxies_are_not_counted(tmp_path: Path) -> None:
    """Behind a reverse proxy every client shares its address: the proxy's connections are exempt."""
    env = {
        "DATA_DIR": str(tmp_path),
        "WEBUI_SECRET_KEY": SECRET,
        "MAX_CONNECTIONS_PER_IP": "2",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    with wardgate_process(env) as base:
        port = int(base.rsplit(":", 1)[1])
        held = [_connect(port) for _ in range(6)]
        try:
            for sock in held:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert all(_answer(sock).startswith(b"HTTP/1.1 200 ") for sock in held)
        finally:
            for sock in held:
                sock.close()
