"""CSRF: cookie-authenticated unsafe requests and logins must come from this site's origin."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from wardgate.config.network import trusted_proxies
from wardgate.http.middleware.csrf import REFUSAL, CSRFMiddleware
from wardgate.http.middleware.security_headers import SecurityHeadersMiddleware
from wardgate.http.middleware.trusted_proxy import TrustedProxyMiddleware
from wardgate.security.headers import build_header_policy

SITE = "https://chat.example.com"
TRUSTED = "https://app.example.org"
FOREIGN = "https://evil.example"
SIGNIN = "/api/v1/auths/signin"


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _app(site_origin: str | None = SITE, trusted: tuple[str, ...] = (TRUSTED,)) -> CSRFMiddleware:
    return CSRFMiddleware(_ok, site_origin=site_origin, trusted_origins=trusted)


async def _send(
    method: str,
    headers: dict[str, str],
    *,
    path: str = "/api/v1/chats/new",
    app: CSRFMiddleware | None = None,
    base_url: str = SITE,
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app or _app())
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        return await client.request(method, path, headers=headers)


COOKIE = {"Cookie": "token=session-jwt"}


def _refused(response: httpx.Response) -> bool:
    return response.status_code == 403 and response.json() == {"detail": REFUSAL}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "origin_headers",
    [
        {"Origin": FOREIGN},
        {"Origin": "null"},
        {},
        {"Referer": f"{FOREIGN}/page"},
        {"Origin": "https://chat.example.com.evil.example"},
        {"Origin": "http://chat.example.com"},  # scheme differs
        {"Origin": "https://chat.example.com:8443"},  # port differs
        {"Origin": FOREIGN, "Referer": f"{SITE}/page"},  # Origin wins
        {"Origin": "null", "Referer": f"{SITE}/page"},
        {"Origin": FOREIGN, "Sec-Fetch-Site": "same-origin"},  # a valid Origin decides
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "garbage"},
    ],
)
@pytest.mark.anyio
async def test_cookie_requests_from_elsewhere_are_refused(
    method: str, origin_headers: dict[str, str]
) -> None:
    assert _refused(await _send(method, {**COOKIE, **origin_headers}))


@pytest.mark.parametrize(
    "origin_headers",
    [
        {"Origin": SITE},
        {"Origin": "HTTPS://CHAT.EXAMPLE.COM:443"},
        {"Origin": TRUSTED},
        {"Referer": f"{SITE}/c/123?x=1"},
        {"Referer": f"{TRUSTED}/"},
        # Referrer-Policy: no-referrer makes browsers send Origin: null on same-origin form posts.
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "same-origin"},
    ],
)
@pytest.mark.anyio
async def test_cookie_requests_from_this_site_pass(origin_headers: dict[str, str]) -> None:
    response = await _send("POST", {**COOKIE, **origin_headers})
    assert response.status_code == 200


@pytest.mark.parametrize("credential", [{"Authorization": "Bearer abc"}, {"X-API-Key": "sk-123"}])
@pytest.mark.anyio
async def test_header_credentials_are_exempt(credential: dict[str, str]) -> None:
    response = await _send("POST", {**COOKIE, **credential, "Origin": FOREIGN})
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE"])
@pytest.mark.anyio
async def test_safe_methods_are_never_checked(method: str) -> None:
    response = await _send(method, {**COOKIE, "Origin": FOREIGN})
    assert response.status_code == 200
    login = await _send(method, {"Origin": FOREIGN}, path=SIGNIN)
    assert login.status_code == 200


@pytest.mark.anyio
async def test_requests_without_the_cookie_pass() -> None:
    response = await _send("POST", {"Origin": FOREIGN, "Cookie": "other=1"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", [SIGNIN, "/api/v1/auths/signup", f"{SIGNIN}/"])
@pytest.mark.parametrize(
    "origin_headers",
    [
        {"Origin": FOREIGN},
        {"Origin": "null"},
        {"Referer": f"{FOREIGN}/x"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
@pytest.mark.anyio
async def test_login_csrf_is_refused_without_a_cookie(path: str, origin_headers: dict[str, str]) -> None:
    assert _refused(await _send("POST", origin_headers, path=path))


@pytest.mark.parametrize(
    "origin_headers",
    [{}, {"Origin": SITE}, {"Origin": TRUSTED}, {"Referer": f"{SITE}/auth"}, {"Sec-Fetch-Site": "same-site"}],
)
@pytest.mark.anyio
async def test_login_from_this_site_or_a_script_passes(origin_headers: dict[str, str]) -> None:
    response = await _send("POST", origin_headers, path=SIGNIN)
    assert response.status_code == 200


@pytest.mark.anyio
async def test_without_site_origin_the_request_host_is_the_site() -> None:
    app = _app(site_origin=None, trusted=())
    ok = await _send(
        "POST",
        {**COOKIE, "Origin": "https://gate.internal:8443"},
        app=app,
        base_url="https://gate.internal:8443",
    )
    assert ok.status_code == 200
    refused = await _send(
        "POST",
        {**COOKIE, "Origin": "http://gate.internal:8443"},
        app=app,
        base_url="https://gate.internal:8443",
    )
    assert _refused(refused)


@pytest.mark.anyio
async def test_site_origin_given_ignores_the_host_header() -> None:
    response = await _send(
        "POST", {**COOKIE, "Origin": "https://other.example"}, base_url="https://other.example"
    )
    assert _refused(response)


@pytest.mark.anyio
async def test_star_is_never_a_trusted_origin() -> None:
    response = await _send("POST", {**COOKIE, "Origin": FOREIGN}, app=_app(trusted=("*",)))
    assert _refused(response)


@pytest.mark.anyio
async def test_custom_cookie_and_api_key_names() -> None:
    app = CSRFMiddleware(
        _ok, site_origin=SITE, trusted_origins=[], cookie_name="wg", api_key_header="X-Gateway-Key"
    )
    assert _refused(await _send("POST", {"Cookie": "wg=1", "Origin": FOREIGN}, app=app))
    assert (await _send("POST", {"Cookie": "token=1", "Origin": FOREIGN}, app=app)).status_code == 200
    assert (
        await _send("POST", {"Cookie": "wg=1", "Origin": FOREIGN, "X-Gateway-Key": "k"}, app=app)
    ).status_code == 200


def test_bad_origins_in_configuration_raise() -> None:
    with pytest.raises(ValueError, match="site origin"):
        CSRFMiddleware(_ok, site_origin="chat.example.com", trusted_origins=[])
    with pytest.raises(ValueError, match="trusted origin"):
        CSRFMiddleware(_ok, site_origin=SITE, trusted_origins=["nonsense"])


def test_site_origin_may_be_a_url_with_a_path() -> None:
    assert CSRFMiddleware(_ok, site_origin=f"{SITE}/webui/", trusted_origins=[]).site_origin == SITE


async def _handshake(headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws/socket.io",
        "scheme": "wss",
        "headers": [(b"host", b"chat.example.com"), *headers],
        "client": ("198.51.100.7", 1),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await _app()(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ([(b"cookie", b"token=x"), (b"origin", FOREIGN.encode())], "websocket.close"),
        ([(b"cookie", b"token=x")], "websocket.close"),
        ([(b"cookie", b"token=x"), (b"origin", SITE.encode())], "websocket.accept"),
        ([(b"origin", FOREIGN.encode())], "websocket.accept"),  # no cookie: nothing to hijack
        (
            [(b"cookie", b"token=x"), (b"origin", FOREIGN.encode()), (b"authorization", b"Bearer t")],
            "websocket.accept",
        ),
    ],
)
@pytest.mark.anyio
async def test_cross_site_websocket_hijacking(headers: list[tuple[bytes, bytes]], outcome: str) -> None:
    sent = await _handshake(headers)
    assert [message["type"] for message in sent] == [outcome]


@pytest.mark.parametrize(
    ("origin", "status"),
    [("https://chat.example.com", 200), ("http://gate.internal:8080", 403), (FOREIGN, 403)],
)
@pytest.mark.anyio
async def test_behind_a_trusted_proxy_the_forwarded_origin_is_the_site(origin: str, status: int) -> None:
    csrf = CSRFMiddleware(_ok, site_origin=None, trusted_origins=[])
    app = TrustedProxyMiddleware(
        SecurityHeadersMiddleware(csrf, build_header_policy({})), trusted_proxies("10.0.0.1")
    )
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
    headers = {
        **COOKIE,
        "Origin": origin,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "chat.example.com",
    }
    async with httpx.AsyncClient(transport=transport, base_url="http://gate.internal:8080") as client:
        response = await client.post("/api/v1/chats/new", headers=headers)
    assert response.status_code == status
    # The refusal carries the security headers too, HSTS included: the client-facing scheme is HTTPS.
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" in response.headers
