"""Attacker text and sibling sites against the genuine pages of a real `wardgate serve`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow
BAIT = "Your account is locked. Call +1-555-0100 to unlock it"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"DATA_DIR": str(tmp_path_factory.mktemp("pages")), "WEBUI_SECRET_KEY": SECRET}
    with wardgate_process(env) as base:
        yield base


def _token(base: str) -> str:
    body = {"name": "Ada", "email": "ada@example.com", "password": PASSWORD}
    response = httpx.post(f"{base}/api/v1/auths/signup", json=body, headers={"origin": base})
    if response.status_code != 200:
        response = httpx.post(f"{base}/api/v1/auths/signin", json=body, headers={"origin": base})
    return str(response.json()["token"])


@pytest.mark.parametrize("page", ["/auth", "/account", "/admin"])
def test_a_link_cannot_put_its_own_words_on_a_genuine_page(server: str, page: str) -> None:
    cookies = {"token": _token(server)}
    for query in (f"error={BAIT}", f"notice={BAIT}"):
        shown = httpx.get(
            f"{server}{page}", params=dict([query.split("=", 1)]), cookies=cookies, follow_redirects=True
        )
        assert shown.status_code == 200
        assert "Call +1-555-0100" not in shown.text


def test_a_sibling_site_cannot_sign_people_out(server: str) -> None:
    token = _token(server)
    cookies = {"token": token}
    forced = httpx.get(
        f"{server}/api/v1/auths/signout", cookies=cookies, headers={"sec-fetch-site": "same-site"}
    )
    assert forced.status_code == 403
    assert httpx.get(f"{server}/api/v1/auths/", cookies=cookies).status_code == 200  # still signed in
