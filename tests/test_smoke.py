"""The minimum a deployment needs: sign up, use the session, sign out, and the token is refused."""

from __future__ import annotations

from starlette.testclient import TestClient

from tests.conftest import bearer, signup


def test_signup_session_signout(client: TestClient) -> None:
    body = signup(client, "Admin@Example.com")
    assert body["role"] == "admin" and body["email"] == "admin@example.com"
    me = client.get("/api/v1/auths/", headers=bearer(body["token"]))
    assert me.status_code == 200 and me.json()["id"] == body["id"]
    assert client.post("/api/v1/auths/signout", headers=bearer(body["token"])).status_code == 200
    refused = client.get("/api/v1/auths/", headers=bearer(body["token"]))
    assert refused.status_code == 401
    assert refused.json() == {"detail": "This session has ended. Please sign in again."}
