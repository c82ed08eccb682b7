"""The whole OpenAPI document, fuzzed by schemathesis against a real `wardgate serve`: as an
administrator, as a user and anonymously, every generated request (valid and invalid) gets a
documented status with the documented shape, and never a 5xx."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, SECRET
from tests.servers import wardgate_process
from wardgate.app import create_app
from wardgate.config import load_settings

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Calls that end the caller's own sessions: fuzzed anonymously (and with throwaway tokens
# elsewhere), never with the fixture's tokens, which must stay valid for the rest of the run.
ENDS_OWN_SESSION = {
    ("GET", "/api/v1/auths/signout"),
    ("POST", "/api/v1/auths/signout"),
    ("POST", "/api/v1/auths/sessions/revoke"),
}


@dataclass(frozen=True)
class Target:
    base: str
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("fuzz")),
        "WEBUI_SECRET_KEY": SECRET,
        "ENABLE_API_KEYS": "true",
        "GITHUB_CLIENT_ID": "fuzz-client",
        "GITHUB_CLIENT_SECRET": "fuzz-client-secret",
        "SIGNIN_IP_RATE_LIMIT": "100000/1m",
        "SIGNUP_RATE_LIMIT": "100000/1m",
        "AUTH_FAILURE_RATE_LIMIT": "100000/1m",
    }
    with wardgate_process(env) as base, httpx.Client(base_url=base, headers={"origin": base}) as client:
        admin = client.post(
            "/api/v1/auths/signup", json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
        )
        assert admin.status_code == 200, admin.text
        admin_token = admin.json()["token"]
        added = client.post(
            "/api/v1/auths/add",
            json={"name": "Bob", "email": "bob@example.com", "password": PASSWORD, "role": "user"},
            headers={"authorization": f"Bearer {admin_token}"},
        )
        assert added.status_code == 200, added.text
        client.cookies.clear()
        user = client.post("/api/v1/auths/signin", json={"email": "bob@example.com", "password": PASSWORD})
        assert user.status_code == 200, user.text
        yield Target(base, {"admin": admin_token, "user": user.json()["token"]})


def _document() -> dict[str, Any]:
    """The document `wardgate serve` publishes, built in-process so that collection needs no server
    (the test checks the served one is the same)."""
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(load_settings({"DATA_DIR": data_dir, "WEBUI_SECRET_KEY": SECRET}))
        document: dict[str, Any] = TestClient(app).get("/openapi.json").json()
    return document


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


def test_the_fuzzed_document_is_the_one_served(target: Target) -> None:
    assert httpx.get(f"{target.base}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], target: Target) -> None:
    roles: dict[str, dict[str, str]] = {"anonymous": {}}
    if (case.method.upper(), case.path) not in ENDS_OWN_SESSION:
        roles |= {role: {"authorization": f"Bearer {token}"} for role, token in target.tokens.items()}
    for headers in roles.values():
        response = case.call(base_url=target.base, headers={"origin": target.base, **headers}, timeout=10)
        case.validate_response(response, checks=CHECKS, headers=headers)


@pytest.mark.parametrize(
    ("method", "path", "request_args"),
    [
        ("GET", "/api/v1/audit", {"params": {"until": "2439866043609168834723840"}}),
        ("GET", "/api/v1/audit", {"params": {"since": str(2**63)}}),
    ],
)
def test_a_time_past_year_9999_is_refused_not_overflowed(
    target: Target, method: str, path: str, request_args: dict[str, Any]
) -> None:
    """Found by fuzzing: such a number reached SQLite and came back as a 500 (OverflowError)."""
    response = httpx.request(
        method,
        f"{target.base}{path}",
        headers={"origin": target.base, "authorization": f"Bearer {target.tokens['admin']}"},
        **request_args,
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "less_than_equal"


def test_a_key_cannot_be_made_with_a_narrowing_this_version_ignores(
    target: Target,
) -> None:
    with httpx.Client(
        base_url=target.base,
        headers={"origin": target.base, "authorization": f"Bearer {target.tokens['admin']}"},
    ) as client:
        far = client.post("/api/v1/auths/api_keys", json={"name": "old", "expires_at": 2**64})
        assert far.status_code == 400, far.text
        unknown = client.post("/api/v1/auths/api_keys", json={"name": "narrow", "modelz": ["llama3"]})
        assert unknown.status_code == 422, unknown.text
        assert unknown.json()["detail"][0]["type"] == "extra_forbidden"
        assert all(
            key["name"] not in {"old", "narrow"} for key in client.get("/api/v1/auths/api_keys").json()
        )
