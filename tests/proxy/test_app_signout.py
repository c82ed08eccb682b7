"""The app's own sign-out (Open WebUI's `/api/v1/auths/signout`) ends the wardgate session as well:
the app is told, wardgate's session is revoked, and the browser is sent to wardgate's sign-in page.
(The real Open WebUI in Chromium: tests/openwebui.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.proxy.conftest import gateway_env
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefixed(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = gateway_env(
        tmp_path_factory.mktemp("signout"),
        upstream,
        WARDGATE_PATH_PREFIX="/wardgate",
        ENABLE_API_KEYS="true",
        USER_PERMISSIONS_FEATURES_API_KEYS="true",
    )
    with wardgate_process(env, health="/wardgate/health") as base:
        yield base


def _session(base: str, email: str) -> str:
    body = {"name": "Someone", "email": email, "password": PASSWORD}
    answer = httpx.post(f"{base}/wardgate/api/v1/auths/signup", json=body, headers={"origin": base})
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


def test_the_app_sign_out_ends_the_wardgate_session(prefixed: str) -> None:
    token = _session(prefixed, "ada@example.com")
    cookies = {"token": token}
    assert httpx.get(f"{prefixed}/echo-headers", cookies=cookies).status_code == 200
    answer = httpx.post(f"{prefixed}/api/v1/auths/signout", cookies=cookies, headers={"origin": prefixed})
    assert answer.status_code == 200
    assert answer.json() == {"status": True, "redirect_url": "/wardgate/auth?notice=signed-out"}
    assert any(c.startswith("token=") and "Max-Age=0" in c for c in answer.headers.get_list("set-cookie"))
    assert httpx.get(f"{prefixed}/echo-headers", cookies=cookies).status_code == 401
    refused = httpx.get(f"{prefixed}/", cookies=cookies, headers={"accept": "text/html"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/wardgate/auth")


def test_other_paths_and_api_keys_leave_the_session_alone(prefixed: str) -> None:
    token = _session(prefixed, "bob@example.com")
    cookies = {"token": token}
    key = httpx.post(
        f"{prefixed}/wardgate/api/v1/auths/api_keys",
        json={"name": "k"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert key.status_code == 200, key.text
    key = key.json()["api_key"]
    by_key = httpx.post(f"{prefixed}/api/v1/auths/signout", headers={"authorization": f"Bearer {key}"})
    assert by_key.status_code == 200 and "redirect_url" not in by_key.text  # the app's own answer
    other = httpx.post(f"{prefixed}/api/v1/auths/signout-not", cookies=cookies, headers={"origin": prefixed})
    assert other.status_code == 200
    assert httpx.get(f"{prefixed}/echo-headers", cookies=cookies).status_code == 200
