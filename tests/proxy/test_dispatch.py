"""Which paths are wardgate's and which go to the upstream, with an app upstream taking everything else."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace

import anyio
import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, signup
from wardgate.config import Settings
from wardgate.config.values import Role
from wardgate.gateway import Gateway
from wardgate.http.application import build_routes
from wardgate.http.relay.dispatch import UpstreamDispatch, has_dot_segment
from wardgate.http.relay.streaming import _ClientGone, _Inbound
from wardgate.proxy.identity import (
    ForwardingRules,
    IdentityHeaders,
    response_headers,
    upstream_request_headers,
)
from wardgate.proxy.upstreams import Upstream

pytestmark = pytest.mark.slow
MakeClient = Callable[..., TestClient]


def test_every_documented_route_is_owned_by_wardgate(make_settings: Callable[..., Settings]) -> None:
    """A route added to the API is never shadowed by the app upstream (or handed to it)."""
    app = build_routes(Gateway.build(make_settings(UPSTREAM_URL="http://127.0.0.1:9")))
    dispatch = UpstreamDispatch(app)
    paths = [re.sub(r"\{[^}]+\}", "some-id", path) for path in app.openapi()["paths"]]
    assert len(paths) > 20
    assert [path for path in paths if not dispatch.owns(path)] == []
    for page in ("/auth", "/account", "/admin", "/static/wardgate.css", "/robots.txt", "/openapi.json"):
        assert dispatch.owns(page), page
    for other in ("/", "/authx", "/api/v1/auths/signupx", "/static", "/api/chat", "/ws/socket.io"):
        assert not dispatch.owns(other), other


@pytest.mark.parametrize(
    ("path", "answered_by_wardgate"),
    [
        ("/api/config", True),
        ("/health", True),
        ("/static/wardgate.css", True),
        ("/auth", True),
        ("/", False),
        ("/authx", False),
        ("/api/v1/chats/", False),
    ],
)
def test_wardgate_answers_its_own_paths_and_the_app_gets_the_rest(
    make_client: MakeClient, upstream: str, path: str, answered_by_wardgate: bool
) -> None:
    client = make_client(UPSTREAM_URL=upstream)
    anonymous = client.get(path)
    if answered_by_wardgate:
        assert anonymous.status_code == 200
    else:  # the app's: only for signed-in callers, and then the upstream answers
        assert anonymous.status_code == 401 and anonymous.json() == {"detail": "Not authenticated."}
        token = signup(client, "admin@example.com")["token"]
        seen = client.get(path, headers=bearer(token)).json()
        assert seen["path"] == path


def test_with_a_path_prefix_the_root_is_the_apps_and_wardgate_moves_aside(
    make_client: MakeClient, upstream: str
) -> None:
    client = make_client(UPSTREAM_URL=upstream, WARDGATE_PATH_PREFIX="/wardgate")
    form = {"name": "Ada", "email": "admin@example.com", "password": PASSWORD}
    token = client.post("/wardgate/api/v1/auths/signup", json=form).json()["token"]
    client.cookies.clear()
    assert client.get("/wardgate/api/config").status_code == 200
    assert client.get("/api/config", headers=bearer(token)).json()["path"] == "/api/config"  # the app's
    assert client.get("/", headers=bearer(token)).json()["path"] == "/"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "//openai/config"),
        ("POST", "//openai/config/update"),
        ("GET", "/%2Fopenai/config"),
        ("GET", "//ollama/config"),
        ("GET", "/api//chats/"),
    ],
)
def test_an_empty_segment_never_reaches_the_app_as_another_path(
    make_client: MakeClient, upstream: str, method: str, path: str
) -> None:
    """`//openai/config` went to the app with its slashes stripped: the app read `/openai/config`,
    one of Open WebUI's admin routes that wardgate keeps for itself (its connection keys, and where
    its model calls go), for any person the app admits (found by review)."""
    client = make_client(UPSTREAM_URL=upstream)
    token = signup(client, "admin@example.com")["token"]
    address = str(client.base_url).rstrip("/") + path  # whole: a relative "//x" would name a host
    refused = client.request(method, address, headers=bearer(token))
    assert refused.status_code == 400 and refused.json() == {
        "detail": "Paths with empty segments are refused."
    }
    assert (
        client.get("/api/chats/", headers=bearer(token)).json()["path"] == "/api/chats/"
    )  # one slash: the app's


def test_dot_segments_are_found_in_any_position() -> None:
    assert has_dot_segment("/a/../b") and has_dot_segment("/a/.") and has_dot_segment("/./a")
    assert not has_dot_segment("/a/...b/.well-known/x..y/")


def test_the_upstream_cannot_set_the_session_cookie_with_a_spaced_name() -> None:
    raw = [(b"Set-Cookie", b"token =evil; Path=/"), (b"set-cookie", b" token=x"), (b"Set-Cookie", b"app=1")]
    assert response_headers(raw) == [(b"set-cookie", b"app=1")]


def test_the_upstream_cannot_set_a_nameless_cookie_that_browsers_send_back_as_token() -> None:
    """RFC 6265bis: `=token=x` is stored with an empty name and sent back as `token=x`."""
    raw = [
        (b"Set-Cookie", b"=token=evil; Path=/"),
        (b"Set-Cookie", b"token; Path=/"),
        (b"Set-Cookie", b"a=b=c"),
    ]
    assert response_headers(raw) == [(b"set-cookie", b"a=b=c")]


def test_the_upstreams_date_gives_way_to_the_servers_own() -> None:
    """The server adds a Date to every answer; a second one would make the response invalid."""
    assert response_headers([(b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"ETag", b'"1"')]) == [
        (b"etag", b'"1"')
    ]


@pytest.mark.parametrize(
    ("header", "forwarded"),
    [
        ("app=1; token=abc", "app=1"),
        ('a="x; token=abc; b=y"', 'a="x; b=y"'),  # split as authentication splits it: on ";"
        ("token=abc; a@b=1; app=1", "a@b=1; app=1"),  # names the stdlib refuses pass as they came
        ("x=a b; app=1; token =abc", "x=a b; app=1"),
        ("token=abc", None),
    ],
)
def test_only_the_session_cookie_is_taken_out_of_the_cookie_header(
    header: str, forwarded: str | None
) -> None:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/app/x",
        "query_string": b"",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("10.0.0.1", 1234),
        "headers": [(b"host", b"testserver"), (b"cookie", header.encode())],
    }
    user = SimpleNamespace(email="a@example.com", name="A", role="user", groups=())
    caller = SimpleNamespace(user=user, via="cookie")
    rules = ForwardingRules(
        IdentityHeaders("X-Forwarded-Email", "X-Forwarded-Name", "X-Forwarded-Groups", ""), "x-api-key"
    )
    upstream = Upstream("app", "http://127.0.0.1:9", "", frozenset({Role.USER}), frozenset())
    sent = upstream_request_headers(scope, caller, upstream, rules, lambda _: False)  # type: ignore[arg-type]
    assert dict(sent).get("cookie") == forwarded


def test_a_chunked_upload_over_the_body_limit_is_413_not_502(make_client: MakeClient, upstream: str) -> None:
    client = make_client(UPSTREAM_URL=upstream, MAX_BODY_SIZE="1024")
    token = signup(client, "admin@example.com")["token"]
    answer = client.post("/app/upload", content=iter([b"x" * 800] * 4), headers=bearer(token))
    assert answer.status_code == 413 and set(answer.json()) == {"detail"}


def test_headers_reach_the_upstream_unaltered_and_unadded(make_client: MakeClient, upstream: str) -> None:
    client = make_client(UPSTREAM_URL=upstream)
    token = signup(client, "admin@example.com")["token"]
    headers = {**bearer(token), "X-Hop": "Bäcker".encode()}
    seen = client.post("/app/raw", content=b"abc", headers=headers).json()
    assert seen["custom_hop_header"] == "Bäcker".encode().decode("latin-1")  # the same bytes arrive
    assert seen["content_type"] is None and seen["user_agent"] == "testclient"


def test_client_framing_headers_never_travel_upstream() -> None:
    """The upstream client frames the body it sends; a client's length could disagree with it (desync)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/app/x",
        "query_string": b"",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("10.0.0.1", 1234),
        "headers": [(b"host", b"testserver"), (b"transfer-encoding", b"chunked"), (b"content-length", b"3")],
    }
    user = SimpleNamespace(email="a@example.com", name="A", role="user", groups=())
    caller = SimpleNamespace(user=user, via="header")
    rules = ForwardingRules(
        IdentityHeaders("X-Forwarded-Email", "X-Forwarded-Name", "X-Forwarded-Groups", ""), "x-api-key"
    )
    upstream = Upstream("app", "http://127.0.0.1:9", "", frozenset({Role.USER}), frozenset())
    sent = upstream_request_headers(scope, caller, upstream, rules, lambda _: False)  # type: ignore[arg-type]
    names = {name.lower() for name, _ in sent}
    assert "content-length" not in names and "transfer-encoding" not in names
    scope["headers"] = [(b"host", b"testserver"), (b"content-length", b"3"), (b"connection", b"x-keep")]
    kept = upstream_request_headers(scope, caller, upstream, rules, lambda _: False)  # type: ignore[arg-type]
    assert "content-length" not in {name.lower() for name, _ in kept}


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_upload_is_seen_as_gone_at_once() -> None:
    """The relay's watcher must not wait for the rest of a body that will never come."""
    messages = [{"type": "http.request", "body": b"part", "more_body": True}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    inbound = _Inbound(receive, has_body=True)  # type: ignore[arg-type]
    received: list[bytes] = []

    async def upload() -> None:
        async for chunk in inbound.body():
            received.append(chunk)

    with pytest.raises(_ClientGone):
        await upload()
    assert received == [b"part"]
    with anyio.fail_after(1):
        await inbound.disconnected()
