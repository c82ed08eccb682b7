"""Second-factor fixtures: an instance whose WEBUI_URL gives passkeys a relying party, and helpers
that enrol factors and sign in through the API as a client would."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, signup
from tests.mfa.authenticator import Authenticator
from wardgate.gateway import Gateway

SITE = "http://testserver"
MFA = "/api/v1/auths/mfa"


def gateway_of(client: TestClient) -> Gateway:
    """The services behind an in-process client (inside its middleware)."""
    app: Any = client.app
    while not hasattr(app, "state"):
        app = app.app
    found: Gateway = app.state.gateway
    return found


def totp_code(secret: str, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or `steps_ahead` 30-second steps later)."""
    return pyotp.TOTP(secret).at(time.time() + 30 * steps_ahead)


def enrol_totp(client: TestClient, token: str) -> tuple[str, list[str]]:
    """Set up and enable an authenticator app; its secret and the recovery codes."""
    setup = client.post(f"{MFA}/totp/setup", headers=bearer(token))
    assert setup.status_code == 200, setup.text
    secret = setup.json()["secret"]
    enabled = client.post(f"{MFA}/totp/enable", json={"code": totp_code(secret)}, headers=bearer(token))
    assert enabled.status_code == 200, enabled.text
    return secret, enabled.json()["recovery_codes"]


def first_step(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """Sign in with the password of an account that has a second factor: the `mfa_required` body."""
    response = client.post("/api/v1/auths/signin", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    assert "set-cookie" not in response.headers
    body: dict[str, Any] = response.json()
    assert body["mfa_required"] is True
    return body


def verify(client: TestClient, mfa_token: str, code: str) -> Any:
    """POST /mfa/verify; the response."""
    return client.post(f"{MFA}/verify", json={"mfa_token": mfa_token, "code": code})


def register_passkey(client: TestClient, token: str, device: Authenticator, name: str = "Laptop") -> Any:
    """Add a passkey held by `device`; the response of the finish call."""
    begun = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(token))
    assert begun.status_code == 200, begun.text
    credential = device.create(begun.json()["options"])
    return client.post(
        f"{MFA}/passkeys/register/finish",
        json={"ceremony": begun.json()["ceremony"], "name": name, "credential": credential},
        headers=bearer(token),
    )


@pytest.fixture
def site(make_client: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """An instance with passkeys available (WEBUI_URL) and room for many code attempts."""

    def make(**overrides: str) -> TestClient:
        settings = {"WEBUI_URL": SITE, "MFA_RATE_LIMIT": "100/5m", **overrides}
        return make_client(**settings)

    return make


@pytest.fixture
def device() -> Authenticator:
    """A software authenticator for the test site's relying party."""
    return Authenticator(rp_id="testserver", origin=SITE)


def new_account(client: TestClient, email: str) -> str:
    """Sign up `email` (the first becomes admin); its session token."""
    token: str = signup(client, email)["token"]
    return token
