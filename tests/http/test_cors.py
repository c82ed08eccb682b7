"""CORS: no cross-origin access by default, exact origins with credentials, `*` never with credentials."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from wardgate.config import load_settings
from wardgate.config.network import cors_origins, origin_of
from wardgate.errors import ConfigError
from wardgate.http.middleware.cors import CORSGuardMiddleware

LISTED = "https://chat.example.com"
FOREIGN = "https://evil.example"


async def _data(_: Request) -> Response:
    return JSONResponse({"ok": True})


def _app(origins: list[str]) -> CORSGuardMiddleware:
    return CORSGuardMiddleware(Starlette(routes=[Route("/data", _data, methods=["GET", "POST"])]), origins)


async def _request(origins: list[str], method: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(origins))
    async with httpx.AsyncClient(transport=transport, base_url="https://gate.example.com") as client:
        return await client.request(method, "/data", headers=headers)


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }


def _cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


CONFIGS = {"none": [], "list": [LISTED, "http://localhost:3000"], "star": ["*"]}


@pytest.mark.parametrize("config", ["none", "list"])
@pytest.mark.parametrize(
    "origin", [FOREIGN, "null", "https://chat.example.com.evil.example", "https://CHAT.example.com"]
)
@pytest.mark.anyio
async def test_foreign_origin_gets_no_cors_headers(config: str, origin: str) -> None:
    for method in ("GET", "POST"):
        response = await _request(CONFIGS[config], method, {"Origin": origin, "Cookie": "token=x"})
        assert response.status_code == 200
        assert _cors_headers(response) == []


@pytest.mark.parametrize("config", ["none", "list"])
@pytest.mark.parametrize("origin", [FOREIGN, "null"])
@pytest.mark.anyio
async def test_preflight_from_unlisted_origin_is_refused_without_cors_headers(
    config: str, origin: str
) -> None:
    response = await _request(CONFIGS[config], "OPTIONS", _preflight(origin))
    assert response.status_code == 403
    assert response.json() == {"detail": "CORS origin not allowed"}
    assert _cors_headers(response) == []


@pytest.mark.anyio
async def test_listed_origin_gets_credentials() -> None:
    response = await _request(CONFIGS["list"], "GET", {"Origin": LISTED, "Cookie": "token=x"})
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


@pytest.mark.anyio
async def test_listed_origin_preflight() -> None:
    response = await _request(CONFIGS["list"], "OPTIONS", _preflight(LISTED))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize("origin", [FOREIGN, LISTED, "null"])
@pytest.mark.anyio
async def test_star_never_allows_credentials(origin: str) -> None:
    simple = await _request(CONFIGS["star"], "GET", {"Origin": origin, "Cookie": "token=x"})
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple.headers
    preflight = await _request(CONFIGS["star"], "OPTIONS", _preflight(origin))
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in preflight.headers


@pytest.mark.parametrize("config", ["none", "list", "star"])
@pytest.mark.anyio
async def test_requests_without_origin_get_no_cors_headers(config: str) -> None:
    response = await _request(CONFIGS[config], "GET", {})
    assert response.status_code == 200
    assert _cors_headers(response) == []


@pytest.mark.parametrize(("config", "varies"), [("none", False), ("list", True), ("star", True)])
@pytest.mark.anyio
async def test_answers_vary_by_origin_only_when_cors_is_configured(config: str, varies: bool) -> None:
    """A shared cache must not hand a listed origin's answer to another origin, or the reverse."""
    response = await _request(CONFIGS[config], "GET", {})
    assert ("origin" in response.headers.get("vary", "").lower()) is varies


@pytest.mark.anyio
async def test_options_without_preflight_headers_reaches_the_app() -> None:
    response = await _request([], "OPTIONS", {"Origin": FOREIGN})
    assert response.status_code == 405  # the route's own answer, not a CORS refusal


@pytest.mark.parametrize(
    ("value", "origins"),
    [
        ("", []),
        ("  ;  ", []),
        ("*", ["*"]),
        (" * ", ["*"]),
        ("https://chat.example.com", ["https://chat.example.com"]),
        ("https://a.example;http://localhost:3000", ["https://a.example", "http://localhost:3000"]),
        ("HTTPS://Chat.Example.COM:443", ["https://chat.example.com"]),
        ("http://a.example:80;https://a.example:8443", ["http://a.example", "https://a.example:8443"]),
        ("http://[::1]:8080", ["http://[::1]:8080"]),
        ("http://127.0.0.1:3000", ["http://127.0.0.1:3000"]),
        ("https://a.example;https://a.example", ["https://a.example"]),
    ],
)
def test_parse_cors_origins(value: str, origins: list[str]) -> None:
    assert list(cors_origins(value)) == origins


@pytest.mark.parametrize(
    "value",
    [
        "chat.example.com",
        "//chat.example.com",
        "ftp://chat.example.com",
        "app://chat",
        "null",
        "https://chat.example.com/",
        "https://chat.example.com/app",
        "https://chat.example.com?x=1",
        "https://chat.example.com#x",
        "https://user@chat.example.com",
        "https://*.example.com",
        "https://chat.example.com:99999",
        "https://chat.example.com:abc",
        "https://chat.exa\nmple.com",
        "https://",
        "*;https://chat.example.com",
    ],
)
def test_parse_cors_origins_refuses(value: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not an origin|cannot be combined"):
        cors_origins(value)
    with pytest.raises(ConfigError) as caught:  # at load: one problem, naming the variable
        load_settings({"DATA_DIR": str(tmp_path), "CORS_ALLOW_ORIGIN": value}, env_file=None)
    (problem,) = caught.value.problems
    assert problem.startswith("CORS_ALLOW_ORIGIN=")


def test_guard_refuses_star_mixed_with_origins() -> None:
    with pytest.raises(ValueError, match=r"\*"):
        _app(["*", LISTED])


def test_guard_refuses_a_non_origin() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        _app(["https://chat.example.com/"])


@pytest.mark.anyio
async def test_guard_matches_origins_given_in_another_spelling() -> None:
    response = await _request(["HTTPS://Chat.Example.com:443"], "GET", {"Origin": LISTED})
    assert response.headers["access-control-allow-origin"] == LISTED


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://chat.example.com/path?q#f", "https://chat.example.com"),
        ("HTTP://A.EXAMPLE:80/", "http://a.example"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("null", None),
        ("", None),
        ("ftp://a.example", None),
        ("https://a.example:bad", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


@pytest.mark.anyio
async def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    scope = {"type": "websocket", "path": "/ws", "headers": [(b"origin", FOREIGN.encode())]}
    await CORSGuardMiddleware(app, [])(scope, receive, send)
    assert seen == ["websocket"]
