"""Security headers: the variable table (validation, defaults, switching off) and the middleware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocket

from wardgate.config import load_settings
from wardgate.config.headers import (
    DEFAULT_HTML_CSP,
    DEFAULT_OTHER_CSP,
    HEADER_ENV_NAMES,
    HEADER_VARIABLES,
    checked_headers,
)
from wardgate.errors import ConfigError
from wardgate.http.middleware.security_headers import PROXIED_STATE_KEY, SecurityHeadersMiddleware
from wardgate.security.headers import HeaderPolicy, build_header_policy


def header_problems(values: dict[str, str]) -> list[str]:
    """The problems the load reports for these header variables."""
    return checked_headers(values)[1]


def _policy(values: dict[str, str | None]) -> HeaderPolicy:
    """The policy for these variables as the load checks them (None: unset)."""
    checked, problems = checked_headers({k: v for k, v in values.items() if v is not None})
    assert problems == []
    return build_header_policy(checked)


HEADER_OF = {variable.env_name: variable.header.lower() for variable in HEADER_VARIABLES}

# (variable, configured value, value sent)
VALID = [
    ("HSTS", "max-age=63072000", "max-age=63072000"),
    ("HSTS", "max-age=0", "max-age=0"),
    ("HSTS", "max-age=31536000;includeSubDomains", "max-age=31536000;includeSubDomains"),
    ("HSTS", "max-age=31536000; includeSubDomains; preload", "max-age=31536000; includeSubDomains; preload"),
    ("HSTS", "MAX-AGE=10; INCLUDESUBDOMAINS", "MAX-AGE=10; INCLUDESUBDOMAINS"),
    ("XFRAME_OPTIONS", "DENY", "DENY"),
    ("XFRAME_OPTIONS", "SAMEORIGIN", "SAMEORIGIN"),
    ("XFRAME_OPTIONS", "sameorigin", "SAMEORIGIN"),
    ("XCONTENT_TYPE", "nosniff", "nosniff"),
    ("XCONTENT_TYPE", "NoSniff", "nosniff"),
    ("XDOWNLOAD_OPTIONS", "noopen", "noopen"),
    ("XPERMITTED_CROSS_DOMAIN_POLICIES", "none", "none"),
    ("XPERMITTED_CROSS_DOMAIN_POLICIES", "master-only", "master-only"),
    ("XPERMITTED_CROSS_DOMAIN_POLICIES", "by-content-type", "by-content-type"),
    ("XPERMITTED_CROSS_DOMAIN_POLICIES", "by-ftp-filename", "by-ftp-filename"),
    *[
        ("REFERRER_POLICY", value, value)
        for value in (
            "no-referrer",
            "no-referrer-when-downgrade",
            "origin",
            "origin-when-cross-origin",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin",
            "unsafe-url",
        )
    ],
    ("REFERRER_POLICY", "No-Referrer", "no-referrer"),
    ("PERMISSIONS_POLICY", "camera=()", "camera=()"),
    ("PERMISSIONS_POLICY", "camera=(),microphone=(self)", "camera=(),microphone=(self)"),
    ("PERMISSIONS_POLICY", "camera=(), geolocation=(), usb=(self)", "camera=(), geolocation=(), usb=(self)"),
    ("PERMISSIONS_POLICY", "Camera=(SELF)", "camera=(self)"),
    ("CACHE_CONTROL", "no-store", "no-store"),
    ("CACHE_CONTROL", "no-store, max-age=0", "no-store, max-age=0"),
    ("CACHE_CONTROL", "private,no-cache,must-revalidate", "private,no-cache,must-revalidate"),
    (
        "CACHE_CONTROL",
        "public, max-age=3600, s-maxage=60, immutable",
        "public, max-age=3600, s-maxage=60, immutable",
    ),
    ("CONTENT_SECURITY_POLICY", "default-src 'self'", "default-src 'self'"),
    (
        "CONTENT_SECURITY_POLICY",
        "default-src 'self'; img-src 'self' data: https://img.example.com; frame-ancestors 'none';",
        "default-src 'self'; img-src 'self' data: https://img.example.com; frame-ancestors 'none';",
    ),
    ("CONTENT_SECURITY_POLICY", "script-src 'nonce-abc+/=='", "script-src 'nonce-abc+/=='"),
    (
        "CONTENT_SECURITY_POLICY_REPORT_ONLY",
        "default-src 'self'; report-to csp",
        "default-src 'self'; report-to csp",
    ),
    ("CROSS_ORIGIN_OPENER_POLICY", "same-origin", "same-origin"),
    ("CROSS_ORIGIN_OPENER_POLICY", "same-origin-allow-popups", "same-origin-allow-popups"),
    ("CROSS_ORIGIN_OPENER_POLICY", "unsafe-none", "unsafe-none"),
    ("CROSS_ORIGIN_RESOURCE_POLICY", "same-site", "same-site"),
    ("CROSS_ORIGIN_RESOURCE_POLICY", "cross-origin", "cross-origin"),
    ("CROSS_ORIGIN_EMBEDDER_POLICY", "require-corp", "require-corp"),
    ("CROSS_ORIGIN_EMBEDDER_POLICY", "credentialless", "credentialless"),
    ("CROSS_ORIGIN_EMBEDDER_POLICY", "unsafe-none", "unsafe-none"),
    ("REPORTING_ENDPOINTS", 'csp="https://reports.example.com/csp"', 'csp="https://reports.example.com/csp"'),
    (
        "REPORTING_ENDPOINTS",
        'a="https://r.example/a", b="https://r.example/b"',
        'a="https://r.example/a", b="https://r.example/b"',
    ),
    ("XFRAME_OPTIONS", "  DENY  ", "DENY"),
]

INVALID = [
    ("HSTS", "max-age=abc"),
    ("HSTS", "max-age=10;preload;includeSubDomains"),
    ("HSTS", "includeSubDomains"),
    ("HSTS", "max-age=١٢"),  # non-ASCII digits
    ("XFRAME_OPTIONS", "ALLOW-FROM https://evil.example"),
    ("XFRAME_OPTIONS", "ALLOWALL"),
    ("XCONTENT_TYPE", "sniff"),
    ("XDOWNLOAD_OPTIONS", "open"),
    ("XPERMITTED_CROSS_DOMAIN_POLICIES", "all"),
    ("REFERRER_POLICY", "always"),
    ("PERMISSIONS_POLICY", "none"),  # Open WebUI's own invalid fallback
    ("PERMISSIONS_POLICY", "camera=*"),
    ("PERMISSIONS_POLICY", "camera=(),"),  # trailing comma makes the dictionary invalid
    ("PERMISSIONS_POLICY", "camera=()geolocation=()"),
    ("PERMISSIONS_POLICY", 'camera=(self "https://a.example")'),
    ("PERMISSIONS_POLICY", "teleport=()"),
    ("CACHE_CONTROL", "forever"),
    ("CACHE_CONTROL", "no-store,"),
    ("CACHE_CONTROL", "max-age=-1"),
    ("CONTENT_SECURITY_POLICY", "default-src 'self', script-src 'none'"),  # a second policy
    ("CONTENT_SECURITY_POLICY", "default_src 'self'"),
    ("CONTENT_SECURITY_POLICY", "default-src 'sélf'"),
    ("CONTENT_SECURITY_POLICY_REPORT_ONLY", ";;; nonsense:"),
    ("CROSS_ORIGIN_OPENER_POLICY", "none"),
    ("CROSS_ORIGIN_RESOURCE_POLICY", "same-origin-allow-popups"),
    ("CROSS_ORIGIN_EMBEDDER_POLICY", "require-corp; report-to=x"),
    ("REPORTING_ENDPOINTS", "csp=https://r.example/csp"),
    ("REPORTING_ENDPOINTS", 'CSP="https://r.example/csp"'),
]

INJECTIONS = ["DENY\r\nSet-Cookie: token=x", "x\ny", "a\rb", "nul\x00", "tab\tinside", "del\x7f"]


def _header(policy: HeaderPolicy, header: str, *, html: bool = False) -> str | None:
    if header == "strict-transport-security":
        return None if policy.hsts is None else policy.hsts.decode()
    pairs = dict(policy.html if html else policy.other)
    value = pairs.get(header.encode())
    return None if value is None else value.decode()


def test_every_variable_is_listed_once() -> None:
    assert len(set(HEADER_ENV_NAMES)) == len(HEADER_ENV_NAMES) == len(HEADER_VARIABLES)
    assert "HSTS" in HEADER_ENV_NAMES
    assert "CONTENT_SECURITY_POLICY" in HEADER_ENV_NAMES


@pytest.mark.parametrize(("name", "value", "sent"), VALID)
def test_valid_values_are_sent(name: str, value: str, sent: str) -> None:
    assert header_problems({name: value}) == []
    policy = _policy({name: value})
    assert _header(policy, HEADER_OF[name]) == sent
    assert _header(policy, HEADER_OF[name], html=True) == sent


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_values_are_named(name: str, value: str) -> None:
    problems = header_problems({name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}=")
    assert "expected" in problems[0]


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("name", HEADER_ENV_NAMES)
def test_control_characters_are_refused(name: str, value: str) -> None:
    problems = header_problems({name: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"{name}=")
    assert "control character" in problems[0]
    assert "\n" not in problems[0]
    assert "\r" not in problems[0]


def test_load_names_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "DATA_DIR": str(tmp_path),
                "XFRAME_OPTIONS": "ALLOWALL",
                "HSTS": "forever",
                "REFERRER_POLICY": "no-referrer",
            },
            env_file=None,
        )
    assert len(caught.value.problems) == 2
    assert {p.split("=", 1)[0] for p in caught.value.problems} == {"XFRAME_OPTIONS", "HSTS"}


def test_problem_message_truncates_long_values_and_states_the_accepted_form() -> None:
    [problem] = header_problems({"XFRAME_OPTIONS": "x" * 500})
    assert "x" * 61 not in problem
    assert "DENY or SAMEORIGIN" in problem
    assert "set it empty" in problem


DEFAULTS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "x-download-options": "noopen",
    "x-permitted-cross-domain-policies": "none",
    "referrer-policy": "same-origin",
    "permissions-policy": (
        "accelerometer=(),camera=(),geolocation=(),gyroscope=(),magnetometer=(),microphone=(),payment=(),usb=()"
    ),
    "cache-control": "no-store, max-age=0",
    "content-security-policy": DEFAULT_OTHER_CSP,
    "content-security-policy-report-only": None,
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "cross-origin-embedder-policy": None,
    "reporting-endpoints": None,
}


@pytest.mark.parametrize(("header", "default"), DEFAULTS.items())
def test_defaults_when_unset(header: str, default: str | None) -> None:
    policy = _policy(dict.fromkeys(HEADER_ENV_NAMES))
    assert _header(policy, header) == default
    expected_html = DEFAULT_HTML_CSP if header == "content-security-policy" else default
    assert _header(policy, header, html=True) == expected_html


def test_default_csp_is_strict_for_html() -> None:
    assert "default-src 'none'" in DEFAULT_HTML_CSP
    assert "frame-ancestors 'none'" in DEFAULT_HTML_CSP
    assert "'unsafe-inline'" not in DEFAULT_HTML_CSP
    assert "'unsafe-eval'" not in DEFAULT_HTML_CSP


def test_default_csp_follows_sameorigin_framing() -> None:
    policy = _policy({"XFRAME_OPTIONS": "SAMEORIGIN"})
    assert "frame-ancestors 'self'" in (_header(policy, "content-security-policy", html=True) or "")
    assert "frame-ancestors 'self'" in (_header(policy, "content-security-policy") or "")


def test_configured_csp_applies_to_every_response() -> None:
    policy = _policy({"CONTENT_SECURITY_POLICY": "default-src 'self'"})
    assert _header(policy, "content-security-policy") == "default-src 'self'"
    assert _header(policy, "content-security-policy", html=True) == "default-src 'self'"
    assert (b"content-security-policy", b"default-src 'self'") in policy.proxied


@pytest.mark.parametrize("empty", ["", "   "])
@pytest.mark.parametrize("name", HEADER_ENV_NAMES)
def test_empty_switches_the_header_off(name: str, empty: str) -> None:
    policy = _policy({name: empty})
    assert _header(policy, HEADER_OF[name]) is None
    assert _header(policy, HEADER_OF[name], html=True) is None
    assert HEADER_OF[name].encode() not in dict(policy.proxied)


def test_proxied_set_leaves_out_defaults_for_wardgate_pages() -> None:
    proxied = dict(_policy({}).proxied)
    for header in (
        "content-security-policy",
        "cache-control",
        "permissions-policy",
        "strict-transport-security",
    ):
        assert header.encode() not in proxied
    assert proxied[b"x-content-type-options"] == b"nosniff"
    assert proxied[b"x-frame-options"] == b"DENY"


# --- the middleware ---------------------------------------------------------------------------


async def _html(_: Request) -> Response:
    return HTMLResponse("<p>hi</p>")


async def _json(_: Request) -> Response:
    return JSONResponse({"ok": True})


async def _own_headers(_: Request) -> Response:
    return JSONResponse(
        {"ok": True},
        headers={"Cache-Control": "public, max-age=60", "Content-Security-Policy": "default-src 'self'"},
    )


async def _proxied(request: Request) -> Response:
    setattr(request.state, PROXIED_STATE_KEY, True)
    return HTMLResponse(
        "<p>upstream</p>", headers={"X-Frame-Options": "SAMEORIGIN", "X-Process-Time": "0.01"}
    )


async def _leaky(_: Request) -> Response:
    return PlainTextResponse(
        "x", headers={"Server": "uvicorn", "X-Powered-By": "py", "X-Process-Time": "0.2"}
    )


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


ROUTES = [
    Route("/html", _html),
    Route("/json", _json),
    Route("/own", _own_headers),
    Route("/proxied", _proxied),
    Route("/leaky", _leaky),
    WebSocketRoute("/ws", _socket),
]


def _app(values: dict[str, str | None] | None = None, *, enforce: bool = False) -> ASGIApp:
    policy = _policy(values or {})
    return SecurityHeadersMiddleware(Starlette(routes=ROUTES), policy, enforce_on_proxied=enforce)


async def _get(app: ASGIApp, path: str, *, https: bool = False) -> httpx.Response:
    base_url = "https://testserver" if https else "http://testserver"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        return await client.get(path)


@pytest.mark.anyio
async def test_html_and_json_responses_get_their_sets() -> None:
    html = await _get(_app(), "/html")
    assert html.headers["content-security-policy"] == DEFAULT_HTML_CSP
    assert html.headers["x-frame-options"] == "DENY"
    data = await _get(_app(), "/json")
    assert data.headers["content-security-policy"] == DEFAULT_OTHER_CSP
    assert data.headers["x-content-type-options"] == "nosniff"
    assert data.headers["cache-control"] == "no-store, max-age=0"
    assert data.headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.anyio
async def test_hsts_only_over_https() -> None:
    assert "strict-transport-security" not in (await _get(_app(), "/json")).headers
    response = await _get(_app(), "/json", https=True)
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.anyio
async def test_hsts_switched_off() -> None:
    assert "strict-transport-security" not in (await _get(_app({"HSTS": ""}), "/json", https=True)).headers


@pytest.mark.anyio
async def test_route_headers_are_never_overridden() -> None:
    response = await _get(_app({"CACHE_CONTROL": "no-store"}), "/own")
    assert response.headers.get_list("cache-control") == ["public, max-age=60"]
    assert response.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.anyio
async def test_each_header_is_sent_once() -> None:
    response = await _get(_app(), "/html", https=True)
    for header in DEFAULTS:
        assert len(response.headers.get_list(header)) <= 1


@pytest.mark.anyio
async def test_proxied_responses_get_only_hsts_by_default() -> None:
    response = await _get(_app(), "/proxied", https=True)
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "content-security-policy" not in response.headers
    assert "x-content-type-options" not in response.headers
    assert "x-process-time" not in response.headers


@pytest.mark.anyio
async def test_proxied_responses_when_enforced() -> None:
    response = await _get(_app(enforce=True), "/proxied")
    assert response.headers["x-frame-options"] == "SAMEORIGIN"  # the upstream's own value is kept
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers
    assert "cache-control" not in response.headers
    assert "permissions-policy" not in response.headers


@pytest.mark.anyio
async def test_leaky_headers_are_removed() -> None:
    response = await _get(_app(), "/leaky")
    for header in ("server", "x-powered-by", "x-process-time"):
        assert header not in response.headers


@pytest.mark.anyio
async def test_websockets_pass_through() -> None:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/ws",
        "headers": [],
        "scheme": "ws",
        "query_string": b"",
    }
    inbox: list[Message] = [{"type": "websocket.connect"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return inbox.pop(0) if inbox else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: Message) -> None:
        sent.append(message)

    await _app()(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[0].get("headers", []) == []
