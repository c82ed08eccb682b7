"""What crosses the relay under attack: forged identity headers in another spelling, and an upstream's
own CORS answer — each tried through a real wardgate in front of the real fake upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy.conftest import account, gateway_env
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow
LISTED, EVIL = "https://listed.example", "https://evil.example"
FORGED = {
    "X_Forwarded_Email": "admin@example.com",
    "X_Forwarded_Role": "admin",
    "X_Forwarded_Groups": "admins",
    "X_Forwarded_For": "10.0.0.1",
    "X-Forwarded-Email": "admin@example.com",
}


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = gateway_env(tmp_path_factory.mktemp("relay"), upstream, CORS_ALLOW_ORIGIN=LISTED)
    with wardgate_process(env) as base:
        yield base


def _facts(base: str, token: str, headers: dict[str, str]) -> dict[str, object]:
    response = httpx.get(f"{base}/anything", headers={"authorization": f"Bearer {token}", **headers})
    assert response.status_code == 200, response.text
    facts: dict[str, object] = response.json()
    return facts


def test_identity_headers_forged_with_underscores_never_reach_the_upstream(gateway: str) -> None:
    """A WSGI app reads `X_Forwarded_Email` as `X-Forwarded-Email`: it would see admin@ beside bob."""
    account(gateway, "first@example.com")  # the first account is the admin; Bob is not
    bob = account(gateway, "bob@example.com", name="Bob")
    assert bob["role"] == "user"
    facts = _facts(gateway, bob["token"], FORGED | {"X_Custom_Thing": "1"})
    assert facts["cgi_identity"] == {
        "HTTP_X_FORWARDED_EMAIL": "bob@example.com",
        "HTTP_X_FORWARDED_NAME": "Bob",
        "HTTP_X_FORWARDED_GROUPS": "",
        "HTTP_X_FORWARDED_ROLE": bob["role"],
    }
    names = facts["header_names"]
    assert isinstance(names, list) and not [n for n in names if "_" in n]  # as nginx: none at all


def test_a_method_override_never_reaches_the_upstream(gateway: str) -> None:
    """The rules saw a GET: a server that honoured `X-HTTP-Method-Override: DELETE` would act on
    another method (found by review)."""
    bob = account(gateway, "bob@example.com", name="Bob")
    overrides = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE"}
    names = _facts(gateway, bob["token"], overrides)["header_names"]
    assert isinstance(names, list) and not {name.lower() for name in overrides} & set(names)


def test_with_underscore_headers_allowed_the_protected_spellings_still_go(
    upstream: str, tmp_path: Path
) -> None:
    env = gateway_env(tmp_path, upstream, FORWARD_UNDERSCORE_HEADERS="true")
    with wardgate_process(env) as base:
        bob = account(base, "bob@example.com", name="Bob")
        overrides = {"X_HTTP_Method_Override": "DELETE", "X_Method_Override": "DELETE"}
        facts = _facts(base, bob["token"], FORGED | overrides | {"X_Custom_Thing": "1", "X_Api_Key": "sk-x"})
    names = facts["header_names"]
    assert isinstance(names, list) and "x_custom_thing" in names
    assert not {
        "x_forwarded_email",
        "x_forwarded_role",
        "x_forwarded_groups",
        "x_forwarded_for",
        "x_api_key",
        "x_http_method_override",  # read as HTTP_X_HTTP_METHOD_OVERRIDE by a WSGI app (review)
        "x_method_override",
    } & set(names)
    assert facts["cgi_identity"]["HTTP_X_FORWARDED_EMAIL"] == "bob@example.com"  # type: ignore[index]


def test_an_upstreams_cors_answer_never_reaches_an_unlisted_origin(gateway: str) -> None:
    """Open WebUI reflects any Origin with credentials: through wardgate, only CORS_ALLOW_ORIGIN counts."""
    bob = account(gateway, "bob@example.com", name="Bob")
    cookie = {"cookie": f"token={bob['token']}"}
    evil = httpx.get(f"{gateway}/cors-everyone", headers={"origin": EVIL, **cookie})
    assert evil.status_code == 200  # the request is served (a browser would not let the page read it)
    assert not [h for h in evil.headers if h.lower().startswith("access-control-")], dict(evil.headers)
    listed = httpx.get(f"{gateway}/cors-everyone", headers={"origin": LISTED, **cookie})
    assert listed.headers.get_list("access-control-allow-origin") == [LISTED]
    assert listed.headers.get("access-control-allow-credentials") == "true"
    assert "access-control-expose-headers" not in listed.headers  # the upstream's list is not wardgate's


def test_preflights_on_proxied_paths_are_answered_by_wardgates_policy(gateway: str) -> None:
    preflight = {"access-control-request-method": "DELETE"}
    evil = httpx.options(f"{gateway}/cors-everyone", headers={"origin": EVIL, **preflight})
    assert evil.status_code == 403
    assert "access-control-allow-origin" not in evil.headers
    listed = httpx.options(f"{gateway}/cors-everyone", headers={"origin": LISTED, **preflight})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == LISTED
    assert "answered by the upstream" not in listed.text
