"""Limits that hold against rotating addresses, and that never punish an honest expired session.
Each tried against a real `wardgate serve` behind a (simulated) trusted reverse proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET
from tests.servers import wardgate_process

pytestmark = pytest.mark.slow
SIGNIN = "/api/v1/auths/signin"
SIGNUP = "/api/v1/auths/signup"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Loopback is the trusted proxy (the default), so X-Forwarded-For names the client."""
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("limits")),
        "WEBUI_SECRET_KEY": SECRET,
        "JWT_EXPIRES_IN": "2s",
        "AUTH_FAILURE_RATE_LIMIT": "3/1m",
        "SIGNIN_IP_RATE_LIMIT": "1000/1m",
    }
    with wardgate_process(env) as base:
        response = httpx.post(
            f"{base}{SIGNUP}",
            json={"name": "Ada", "email": "ada@example.com", "password": PASSWORD},
            headers={"origin": base, "x-forwarded-for": "198.51.100.7"},
        )
        assert response.status_code == 200, response.text
        yield base


def test_an_ipv6_client_rotating_addresses_in_its_64_shares_one_bucket(server: str) -> None:
    """Guessing one account's password from a fresh /128 each time: still 5 tries per 3 minutes."""
    statuses = []
    with httpx.Client(base_url=server, headers={"origin": server}) as client:
        for i in range(1, 12):
            response = client.post(
                SIGNIN,
                json={"email": "ada@example.com", "password": f"guess-{i}"},
                headers={"x-forwarded-for": f"2001:db8:1:2::{i:x}"},
            )
            statuses.append(response.status_code)
    assert statuses[:5] == [400] * 5
    assert set(statuses[5:]) == {429}, statuses
    # Another /64 is another subscriber: its own attempts.
    other = httpx.post(
        f"{server}{SIGNIN}",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"origin": server, "x-forwarded-for": "2001:db8:1:3::1"},
    )
    assert other.status_code == 200


def test_an_expired_authentic_token_is_told_to_sign_in_again_and_never_counted(server: str) -> None:
    """An office behind one NAT: people whose sessions merely ended get 401, never 429."""
    office = {"x-forwarded-for": "203.0.113.9"}
    token = httpx.post(
        f"{server}{SIGNIN}",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={"origin": server, **office},
    ).json()["token"]
    time.sleep(2.5)  # JWT_EXPIRES_IN=2s
    with httpx.Client(base_url=server) as client:
        for _ in range(10):  # far past AUTH_FAILURE_RATE_LIMIT=3/1m
            response = client.get("/api/v1/auths/", headers={"authorization": f"Bearer {token}", **office})
            assert response.status_code == 401, response.text
            assert "expired" in response.json()["detail"]
        # A forged token from the same office is counted: the fourth is refused as an attack.
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        codes = [
            client.get("/api/v1/auths/", headers={"authorization": f"Bearer {forged}", **office}).status_code
            for _ in range(5)
        ]
    assert codes[:3] == [401] * 3 and 429 in codes[3:], codes
