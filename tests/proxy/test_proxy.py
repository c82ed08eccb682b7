"""The reverse proxy against real upstream processes: streaming, identity, secrets, access rules."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from tests.conftest import bearer, signup
from tests.fakes.upstream import UPSTREAM_KEY
from tests.proxy.conftest import account, gateway_env
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def admin(gateway: str) -> str:
    return str(account(gateway, "admin@example.com", name="Ada Admin")["token"])


@pytest.fixture(scope="module")
def user(gateway: str, admin: str) -> str:
    return str(account(gateway, "bob@example.com", name="Bob Bäcker")["token"])


def test_first_sse_chunk_arrives_before_the_upstream_finishes(gateway: str, user: str) -> None:
    started = time.monotonic()
    first = None
    events = []
    body = {"chunks": 5, "gap": 0.3, "model": "m", "messages": []}
    with httpx.stream(
        "POST", f"{gateway}/openai/chat/completions", json=body, headers=bearer(user), timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                first = first or time.monotonic() - started
                events.append(line)
    total = time.monotonic() - started
    assert first is not None and first < 0.25, first
    assert total >= 1.2
    assert events[-1] == "data: [DONE]" and len(events) == 6


def test_ollama_ndjson_streams_line_by_line(gateway: str, user: str) -> None:
    arrivals = []
    started = time.monotonic()
    with httpx.stream(
        "POST",
        f"{gateway}/ollama/api/chat",
        json={"model": "llama3", "chunks": 4, "gap": 0.25},
        headers=bearer(user),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                arrivals.append((time.monotonic() - started, json.loads(line)))
    assert [a[1].get("done") for a in arrivals] == [False, False, False, False, True]
    assert arrivals[0][0] < 0.2 and arrivals[-1][0] >= 0.9  # spread out in time, not buffered


def test_spoofed_identity_headers_never_reach_the_upstream(gateway: str, user: str) -> None:
    spoof = {
        "X-Forwarded-Email": "ceo@example.com",
        "X-Forwarded-Role": "admin",
        "x-forwarded-groups": "admins",
        "X-Forwarded-Name": "CEO",
        "X-Forwarded-For": "1.2.3.4",
    }
    seen = httpx.get(f"{gateway}/app/facts", headers={**bearer(user), **spoof}).json()
    assert seen["identity"] == {
        "x-forwarded-email": "bob@example.com",
        "x-forwarded-name": "Bob B%C3%A4cker",
        "x-forwarded-groups": "",
        "x-forwarded-role": "user",
    }
    assert seen["forwarded_for"] == "127.0.0.1"
    assert seen["forwarded_proto"] == "http"


def test_wardgate_credentials_never_reach_the_upstream(gateway: str, user: str) -> None:
    for upstream in ("/openai/facts", "/ollama/api/version", "/app/x"):
        seen = httpx.get(
            f"{gateway}{upstream}", headers=bearer(user), cookies={"token": user, "app": "1"}
        ).json()
        assert seen["token_cookie_present"] is False, upstream
        assert seen["other_cookie"] == "1", upstream
        assert seen["authorization_scheme"] != "Bearer" or seen["authorization_is_upstream_key"], upstream


def test_a_cookie_the_stdlib_cannot_parse_neither_breaks_nor_leaks(gateway: str, user: str) -> None:
    """`a@b=1` once raised CookieError (a 500 on every proxied path: a lockout any site could set)."""
    cookie = f'token={user}; a@b=1; app=1; q="x; token={user}; z=y"'
    response = httpx.get(f"{gateway}/app/x", headers={"Cookie": cookie})
    assert response.status_code == 200
    assert response.json()["token_cookie_present"] is False and response.json()["other_cookie"] == "1"


def test_two_different_session_cookies_are_refused_not_resolved(gateway: str, user: str, admin: str) -> None:
    """A cookie tossed in beside wardgate's (another Domain or Path) must not choose the account."""
    for path in ("/app/x", "/api/v1/auths/"):
        both = httpx.get(f"{gateway}{path}", headers={"Cookie": f"token={user}; token={admin}"})
        assert both.status_code == 401, path
    same = httpx.get(f"{gateway}/app/x", headers={"Cookie": f"token={user}; token={user}"})
    assert same.status_code == 200


def test_the_apps_own_authorization_passes_through_for_cookie_sessions(gateway: str, user: str) -> None:
    app_token = {"Authorization": "Bearer the-apps-own-jwt"}
    seen = httpx.get(f"{gateway}/app/x", headers=app_token, cookies={"token": user}).json()
    assert seen["authorization_present"] is True and seen["token_cookie_present"] is False
    # On a model API the Authorization header is the credential, so a foreign one is refused there.
    ollama = httpx.get(f"{gateway}/ollama/api/version", headers=app_token, cookies={"token": user})
    assert ollama.status_code == 401
    ours = httpx.get(f"{gateway}/app/x", headers=bearer(user), cookies={"token": user}).json()
    assert ours["authorization_present"] is False  # wardgate's own token is never passed on
    both = [("Authorization", "Bearer the-apps-own-jwt"), ("Authorization", f"Bearer {user}")]
    seen = httpx.get(f"{gateway}/app/x", headers=both, cookies={"token": user}).json()
    assert seen["authorization_present"] is False  # nor when it comes second (review)


def test_the_upstream_api_key_is_injected_and_never_shown(gateway: str, user: str) -> None:
    response = httpx.get(f"{gateway}/openai/facts", headers=bearer(user))
    assert response.json()["authorization_is_upstream_key"] is True
    assert UPSTREAM_KEY not in response.text and UPSTREAM_KEY not in str(response.headers)
    ollama = httpx.get(f"{gateway}/ollama/api/version", headers=bearer(user)).json()
    assert ollama["authorization_present"] is False  # Ollama gets no Authorization at all
    config = httpx.get(f"{gateway}/api/config").text + httpx.get(f"{gateway}/health?ready=true").text
    assert UPSTREAM_KEY not in config


def test_hop_by_hop_headers_are_not_forwarded(gateway: str, user: str) -> None:
    headers = {**bearer(user), "Connection": "keep-alive, X-Hop", "X-Hop": "secret-hop", "TE": "trailers"}
    seen = httpx.get(f"{gateway}/app/hop?a=1&b=%2F", headers=headers).json()
    assert seen["custom_hop_header"] is None
    assert seen["query"] == "a=1&b=%2F" and seen["path"] == "/app/hop"


def test_request_bodies_reach_the_upstream(gateway: str, user: str) -> None:
    payload = b"x" * 300_000
    seen = httpx.post(f"{gateway}/app/upload", content=payload, headers=bearer(user)).json()
    assert seen["body_length"] == len(payload) and seen["method"] == "POST"


@pytest.mark.parametrize("size", [200, 100_000], ids=["whole-body", "streamed-body"])
def test_a_connection_header_cannot_strip_the_body_length_to_smuggle_a_request(
    gateway: str, upstream: str, user: str, size: int
) -> None:
    """`Connection: content-length` once sent the body unframed: the upstream read it as a request."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-Email: admin@example.com\r\n\r\n"
    body = smuggled + b"x" * (size - len(smuggled))
    before = httpx.get(f"{upstream}/state").json()["smuggled"]
    head = (
        f"POST /app/innocent HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n"
        f"Connection: close, content-length\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    answer = _raw_exchange(gateway, head.encode() + body)
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert seen["body_length"] == len(body) and seen["path"] == "/app/innocent"
    for _ in range(3):  # whatever was left on the pooled connection would surface now
        assert httpx.get(f"{gateway}/app/next", headers=bearer(user)).json()["path"] == "/app/next"
    assert httpx.get(f"{upstream}/state").json()["smuggled"] == before


def test_a_304_announcing_a_length_arrives_without_a_body_and_keeps_the_connection(
    gateway: str, user: str
) -> None:
    """The length a 304 announces is the representation's; relayed as is, the server waited for it."""
    first = f"GET /not-modified HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\n\r\n"
    second = first.replace("/not-modified", "/app/next").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    with socket.create_connection(_address(gateway), timeout=5) as connection:
        connection.sendall(first.encode())
        answer = connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 304 ") and answer.endswith(b"\r\n\r\n")
        assert b"content-length" not in answer.lower() and b'etag: "v1"' in answer.lower()
        connection.sendall(second.encode())  # the same connection still serves
        rest = _read_to_close(connection)
    assert rest.startswith(b"HTTP/1.1 200 ") and b'"path":"/app/next"' in rest


def test_an_upstream_stream_that_breaks_off_reaches_the_client_cut_short_not_complete(
    gateway: str, user: str
) -> None:
    """A stream that ended cleanly would pass a crashed model's half answer off as whole."""
    received: list[str] = []

    def read_all() -> None:
        with httpx.stream("GET", f"{gateway}/broken-stream", headers=bearer(user), timeout=5) as response:
            assert response.status_code == 200
            received.extend(response.iter_lines())

    with pytest.raises(httpx.RemoteProtocolError):  # no last chunk: the connection just ends
        read_all()
    assert "data: one" in received


def test_redirects_are_passed_back_not_followed(gateway: str, user: str) -> None:
    response = httpx.get(f"{gateway}/redirect", headers=bearer(user), follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"] == "/elsewhere"


def test_the_upstream_cannot_overwrite_the_session_cookie(gateway: str, user: str) -> None:
    response = httpx.get(f"{gateway}/set-cookie", headers=bearer(user))
    cookies = response.headers.get_list("set-cookie")
    assert [c for c in cookies if c.startswith("token=")] == []
    assert any(c.startswith("app=") for c in cookies)


def test_unauthenticated_navigation_goes_to_sign_in_and_api_calls_get_401(gateway: str) -> None:
    page = httpx.get(f"{gateway}/app/page?x=1", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
    assert page.status_code == 303 and page.headers["location"] == "/auth?redirect=/app/page%3Fx%3D1"
    api = httpx.get(f"{gateway}/ollama/api/version")
    assert api.status_code == 401 and api.json() == {"detail": "Not authenticated."}
    forged = httpx.get(f"{gateway}/ollama/api/version", headers=bearer("forged.token.value"))
    assert forged.status_code == 401


def test_pending_users_reach_nothing(upstream: str, tmp_path: Path) -> None:
    env = gateway_env(tmp_path, upstream, DEFAULT_USER_ROLE="pending")
    with wardgate_process(env) as base:
        account(base, "first@example.com")
        pending = account(base, "late@example.com")["token"]
        for path in ("/ollama/api/version", "/openai/facts", "/app/x"):
            response = httpx.get(f"{base}{path}", headers=bearer(pending))
            assert response.status_code == 403, path
            assert response.json() == {"detail": "Your account is pending approval by an administrator."}


def test_per_upstream_roles(upstream: str, tmp_path: Path) -> None:
    env = gateway_env(tmp_path, upstream, OPENAI_ALLOWED_ROLES="admin")
    with wardgate_process(env) as base:
        admin_token = account(base, "root@example.com")["token"]
        user_token = account(base, "u@example.com")["token"]
        refused = httpx.get(f"{base}/openai/facts", headers=bearer(user_token))
        assert refused.status_code == 403
        assert refused.json() == {"detail": "Your account may not use the openai service."}
        assert httpx.get(f"{base}/ollama/api/version", headers=bearer(user_token)).status_code == 200
        assert httpx.get(f"{base}/openai/facts", headers=bearer(admin_token)).status_code == 200


def test_upstream_failures_are_502_and_504(tmp_path: Path, upstream: str) -> None:
    env = gateway_env(tmp_path, upstream, OLLAMA_BASE_URL="http://127.0.0.1:9", UPSTREAM_TIMEOUT="1")
    with wardgate_process(env) as base:
        token = account(base, "a@example.com")["token"]
        down = httpx.get(f"{base}/ollama/api/version", headers=bearer(token))
        assert down.status_code == 502 and down.json() == {"detail": "The ollama service is unavailable."}
        slow = httpx.get(f"{base}/slow", headers=bearer(token), timeout=10)
        assert slow.status_code == 504 and slow.json() == {
            "detail": "The app service did not answer in time."
        }


def test_client_disconnect_cancels_the_upstream_request(gateway: str, upstream: str, user: str) -> None:
    before = httpx.get(f"{upstream}/state").json()
    body = {"chunks": 50, "gap": 0.1, "model": "m", "messages": []}
    with httpx.stream(
        "POST", f"{gateway}/openai/chat/completions", json=body, headers=bearer(user)
    ) as response:
        next(response.iter_lines())
    assert _count_reaches(upstream, "cancelled", before["cancelled"], 5) == before["cancelled"] + 1
    assert httpx.get(f"{upstream}/state").json()["completed"] == before["completed"]


def test_client_disconnect_before_the_answer_cancels_the_upstream_request(
    gateway: str, upstream: str, user: str
) -> None:
    """A model still thinking (no byte answered yet) must not keep working for a client that left."""
    before = httpx.get(f"{upstream}/state").json()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{gateway}/think?seconds=5", headers=bearer(user), timeout=0.5)
    assert _count_reaches(upstream, "abandoned", before["abandoned"], 3) == before["abandoned"] + 1


def test_clients_that_leave_together_each_cancel_their_upstream_request(
    gateway: str, upstream: str, user: str
) -> None:
    """The watches for departed clients start by one timer for all exchanges, set again for the
    next one due: three exchanges begun a few milliseconds apart are all watched."""
    before = httpx.get(f"{upstream}/state").json()

    def leave_early(delay: float) -> None:
        time.sleep(delay)
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{gateway}/think?seconds=5", headers=bearer(user), timeout=0.5)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(leave_early, [0, 0.02, 0.04]))
    assert _count_reaches(upstream, "abandoned", before["abandoned"] + 2, 3) == before["abandoned"] + 3


def _receive_until_closed(socket: ClientConnection) -> None:
    while True:
        socket.recv(timeout=5)


def test_a_revoked_sessions_websocket_is_closed(gateway: str) -> None:
    token = account(gateway, "ws@example.com")["token"]
    ws_url = gateway.replace("http://", "ws://") + "/ws/echo"
    with connect(ws_url, additional_headers={"Cookie": f"token={token}", "Origin": gateway}) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5) == "ws@example.com:hello"
        signout = httpx.post(f"{gateway}/api/v1/auths/signout", headers=bearer(token))
        assert signout.status_code == 200
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            _receive_until_closed(socket)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert time.monotonic() - started < 3


def test_a_websocket_message_is_held_to_a_mebibyte_once_decompressed(gateway: str) -> None:
    """2 MiB of one letter deflates to a few KiB: uvicorn's default took up to 16 MiB a message,
    and a dozen in one read stalled the loop and grew the process by 370 MiB (found by review)."""
    token = account(gateway, "ws@example.com")["token"]
    ws_url = gateway.replace("http://", "ws://") + "/ws/echo"
    headers = {"Cookie": f"token={token}", "Origin": gateway}
    with connect(ws_url, additional_headers=headers, max_size=None) as relayed:
        relayed.send("a" * (512 * 1024))
        assert len(relayed.recv(timeout=5)) == len("ws@example.com:") + 512 * 1024
        relayed.send("a" * (2 * 1024 * 1024))  # compressed by the client (permessage-deflate)
        with pytest.raises(ConnectionClosed) as closed:
            _receive_until_closed(relayed)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big


def test_websocket_upgrade_without_a_session_is_refused(gateway: str) -> None:
    ws_url = gateway.replace("http://", "ws://") + "/ws/echo"
    with pytest.raises(Exception, match=r"403|1008|rejected"), connect(ws_url, open_timeout=5) as socket:
        socket.recv(timeout=2)


@pytest.mark.parametrize("offered", [b"a b", b"caf\xe9", b"v1;v2"], ids=["space", "latin-1", "separator"])
def test_a_subprotocol_list_that_is_not_tokens_is_refused(
    gateway: str, upstream: str, make_client: Callable[..., TestClient], offered: bytes
) -> None:
    """RFC 6455 §4.1: a list of tokens. The server's own handshake refuses any other list (400);
    behind it, the relay did not: the upstream WebSocket client raised ValueError, which nothing
    caught, a 500 for any signed-in person on a server that passes such a list on (found by review,
    in process)."""
    token = account(gateway, "ws@example.com")["token"]
    host, port = _address(gateway)
    handshake = (
        (
            f"GET /ws/echo HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {gateway}\r\nCookie: token={token}\r\n"
        ).encode()
        + b"Sec-WebSocket-Protocol: "
        + offered
        + b"\r\n\r\n"
    )
    assert _raw_exchange(gateway, handshake).startswith(b"HTTP/1.1 400 ")
    client = make_client(UPSTREAM_URL=upstream)
    in_process = signup(client, "ws@example.com")["token"]
    headers = {"cookie": f"token={in_process}".encode(), "sec-websocket-protocol": offered}
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws/echo", headers=headers):
        pass
    assert closed.value.code == 1002


def test_a_list_of_subprotocols_is_offered_upstream(gateway: str) -> None:
    """Every offered protocol reaches the upstream (the fake accepts the last it was offered), from
    one header or from several (RFC 6455 §4.1 allows either)."""
    token = account(gateway, "ws@example.com")["token"]
    ws_url = gateway.replace("http://", "ws://") + "/ws/echo"
    headers = {"Cookie": f"token={token}", "Origin": gateway}
    with connect(
        ws_url, additional_headers=headers, subprotocols=[Subprotocol("chat"), Subprotocol("v2.chat")]
    ) as relayed:
        assert relayed.subprotocol == "v2.chat"
        relayed.send("hello")
        assert relayed.recv(timeout=5) == "ws@example.com:hello"
    host, port = _address(gateway)
    handshake = (
        f"GET /ws/echo HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {gateway}\r\nCookie: token={token}\r\n"
        "Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: v2.chat\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(handshake.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 ") and b"sec-websocket-protocol: v2.chat" in head.lower()


@pytest.mark.parametrize(
    ("target", "body"),
    [("/app/x", b"hello"), ("/openai/chat/completions", b'{"model":"m","chunks":1,"gap":0}')],
    ids=["app", "model-call"],
)
def test_a_length_with_thousands_of_leading_zeros_is_relayed_as_its_number(
    gateway: str, user: str, target: str, body: bytes
) -> None:
    """`Content-Length: 000…05` is 5 to the parser; read with int() it raised ValueError (more than
    4,300 digits): a 500 and a logged traceback for anyone, before authentication."""
    host, port = _address(gateway)
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {user}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {'0' * 5000}{len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    answer = _raw_exchange(gateway, head.encode() + body)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    if target == "/app/x":
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["body_length"] == len(body)
    else:
        assert b"data: [DONE]" in answer


def _raw_get(base: str, target: str, token: str, extra: bytes = b"") -> tuple[int, bytes]:
    """One GET sent byte for byte (HTTP clients remove dot segments and check header bytes first)."""
    host, port = _address(base)
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n"
    )
    head, _, body = _raw_exchange(base, request.encode() + extra + b"\r\n").partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def _raw_exchange(base: str, data: bytes) -> bytes:
    """Bytes sent as they are on a new connection; everything answered until the server closes it."""
    with socket.create_connection(_address(base), timeout=5) as connection:
        connection.sendall(data)
        return _read_to_close(connection)


def _read_to_close(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):
        answer += chunk
    return answer


def _count_reaches(upstream: str, counter: str, before: int, seconds: float) -> int:
    """The fake upstream's `counter` once it passed `before`, or as it stands after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        now = int(httpx.get(f"{upstream}/state").json()[counter])
        if now > before or time.monotonic() >= deadline:
            return now
        time.sleep(0.1)


@pytest.mark.parametrize(
    "target",
    [
        "/ollama/api/chat/../pull",  # past an API key's path scope, within the upstream
        "/ollama/api/chat/%2e%2e/pull",
        "/openai/../../admin",  # out of the upstream's base path
        "/openai/./models",
        "/app/x/..",
    ],
)
def test_dot_segments_are_refused_not_resolved_by_the_upstream(gateway: str, user: str, target: str) -> None:
    status, body = _raw_get(gateway, target, user)
    assert status == 400
    assert json.loads(body) == {"detail": "Paths with '.' or '..' segments are refused."}


def test_upstream_cookies_never_carry_over_to_another_request(gateway: str, user: str, admin: str) -> None:
    """The upstream client keeps no cookie jar: one user's upstream cookie never reaches another."""
    assert httpx.get(f"{gateway}/set-cookie", headers=bearer(user)).status_code == 200
    seen = httpx.get(f"{gateway}/app/facts", headers=bearer(admin)).json()
    assert seen["other_cookie"] is None and seen["token_cookie_present"] is False


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_methods_outside_http_apis_are_refused(gateway: str, user: str, method: str) -> None:
    response = httpx.request(method, f"{gateway}/app/x", headers=bearer(user))
    assert response.status_code == 405 and response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    ("sent", "received"),
    [
        ("/openai/%252e%252e/admin", "/v1/%2e%2e/admin"),  # decoded once by the upstream, never to ".."
        ("/%2561pi/v1/auths/", "/%61pi/v1/auths/"),  # never decoded twice into /api (wardgate's)
        ("/app/a%3Fb", "/app/a%3Fb"),  # a decoded "?" stays part of the path (Starlette re-escapes it)
    ],
)
def test_the_upstream_decodes_to_the_path_the_access_rules_saw(
    gateway: str, user: str, sent: str, received: str
) -> None:
    """Over TCP: Starlette's TestClient decodes the path twice itself, which would hide the bug."""
    status, body = _raw_get(gateway, sent, user)
    assert status == 200 and json.loads(body)["path"] == received


def test_header_bytes_that_are_not_utf8_are_refused_not_altered(gateway: str, user: str) -> None:
    status, body = _raw_get(gateway, "/app/x", user, extra=b"X-Hop: \xff\xfe\r\n")
    assert status == 400 and json.loads(body) == {"detail": "Header values must be ASCII or UTF-8."}
