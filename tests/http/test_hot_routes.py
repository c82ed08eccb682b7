"""The hot routes answer exactly as FastAPI's own routes do, for every outcome.

`HotRoutes` calls the endpoint functions directly; these tests run each request twice, once through
it and once with it stepped aside (so FastAPI routes the request), and compare status, headers and
body. A divergence (a missing header, another error shape, a skipped check) fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.conftest import bearer, signin, signup
from tests.forward_auth.conftest import write_rules

from wardgate.http.hot_routes import HotRoutes

_VOLATILE = {"date", "content-length"}


def _through_fastapi(client: TestClient) -> None:
    """Empty the hot table of the running application (the requests then reach FastAPI)."""
    layer: Any = client.app
    while not isinstance(layer, HotRoutes):
        layer = layer.app
    layer.endpoints = {}


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/v1/auths/", {}),
        ("/api/v1/auths/", {"Authorization": "Bearer not-a-token"}),
        ("/api/v1/authz/auth-request", {"X-Original-URL": "https://app.example.test/x"}),
        ("/api/v1/authz/forward-auth", {"X-Forwarded-Uri": "/x", "Accept": "text/html"}),
    ],
)
def test_refusals_are_the_same_as_fastapis(
    make_client: Callable[..., TestClient], tmp_path: Path, path: str, headers: dict[str, str]
) -> None:
    env = {"FORWARD_AUTH_FILE": write_rules(tmp_path), "WEBUI_URL": "http://testserver"}
    hot, plain = make_client(**env), make_client(**env)
    _through_fastapi(plain)
    answers = [_answer(c.get(path, headers=headers)) for c in (hot, plain)]
    assert answers[0] == answers[1]
    assert answers[0][0] in (401, 302, 403)


def test_a_session_and_a_decision_are_answered_the_same(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    env = {"FORWARD_AUTH_FILE": write_rules(tmp_path), "WEBUI_URL": "http://testserver"}
    hot, plain = make_client(**env), make_client(**env)
    signup(hot, "admin@example.com")
    token = signin(hot, "admin@example.com")["token"]
    _through_fastapi(plain)
    for path, extra in (
        ("/api/v1/auths/", {}),
        ("/api/v1/authz/auth-request", {"X-Original-URL": "https://app.example.test/x"}),
    ):
        answers = [_answer(c.get(path, headers={**bearer(token), **extra})) for c in (hot, plain)]
        assert answers[0] == answers[1]
        assert answers[0][0] == 200


def test_other_methods_still_reach_fastapi(client: TestClient) -> None:
    assert client.post("/api/v1/auths/").status_code == 405  # not answered as a GET
    assert client.head("/api/v1/auths/").status_code == 405


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.items() if k not in _VOLATILE)
    return response.status_code, headers, response.content
