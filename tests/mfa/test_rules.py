"""Where a second factor is required: roles that must enrol, step-up for sensitive changes, the
provider's word at single sign-on, and an admin's reset."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from tests.conftest import Outcome, bearer, refused, signin
from tests.mfa.conftest import MFA, enrol_totp, first_step, gateway_of, new_account, totp_code, verify
from tests.mfa.test_totp import age_step_up
from wardgate.oauth.claims import shows_second_factor

Site = Callable[..., TestClient]
USERS = "/api/v1/users/"


def test_a_required_role_without_a_factor_can_only_enrol(site: Site) -> None:
    client = site(MFA_REQUIRED_ROLES="admin")
    admin = new_account(client, "admin@example.com")
    user = new_account(client, "user@example.com")
    detail = refused(client.get(USERS, headers=bearer(admin)), 403)
    assert "second factor" in detail
    refused(client.post("/api/v1/auths/api_keys", json={"name": "k"}, headers=bearer(admin)), 403)
    assert client.get(MFA, headers=bearer(admin)).json()["required"] is True
    assert client.get("/api/v1/auths/sessions", headers=bearer(user)).status_code == 200  # not their role

    page = client.get("/admin", headers=bearer(admin), follow_redirects=False)
    assert page.status_code == 303 and "/account?notice=mfa-required" in page.headers["location"]

    secret, _ = enrol_totp(client, admin)  # enrolment is open to it, and ends the restriction
    assert client.get(USERS, headers=bearer(admin)).status_code == 200
    done = verify(
        client, first_step(client, "admin@example.com")["mfa_token"], totp_code(secret, steps_ahead=1)
    )
    assert client.get(USERS, headers=bearer(done.json()["token"])).status_code == 200


def test_the_last_factor_of_a_required_role_cannot_be_removed(site: Site) -> None:
    client = site(MFA_REQUIRED_ROLES="admin")
    admin = new_account(client, "admin@example.com")
    _, codes = enrol_totp(client, admin)
    detail = refused(client.post(f"{MFA}/totp/disable", json={"code": codes[0]}, headers=bearer(admin)), 400)
    assert "requires a second factor" in detail


def test_an_api_key_of_a_required_role_without_a_factor_is_refused(site: Site) -> None:
    client = site(ENABLE_API_KEYS="true")
    admin = new_account(client, "admin@example.com")
    key = client.post("/api/v1/auths/api_keys", json={"name": "k"}, headers=bearer(admin)).json()["api_key"]
    dead_upstream = "http://127.0.0.1:9"  # never reached: the caller is refused first
    lax = site(
        ENABLE_API_KEYS="true", OLLAMA_BASE_URL=dead_upstream
    )  # the same database (DATA_DIR), without the rule
    assert lax.get("/ollama/api/tags", headers=bearer(key)).status_code == 502
    strict = site(ENABLE_API_KEYS="true", MFA_REQUIRED_ROLES="admin", OLLAMA_BASE_URL=dead_upstream)
    assert "second factor" in refused(strict.get("/ollama/api/tags", headers=bearer(key)), 403)


def _id(client: TestClient, token: str) -> str:
    return gateway_of(client).codec.verify(token).user_id


def test_sensitive_changes_need_a_recent_factor(site: Site) -> None:
    client = site()
    admin = new_account(client, "admin@example.com")
    bob = new_account(client, "bob@example.com")
    secret, _ = enrol_totp(client, admin)
    session = verify(
        client, first_step(client, "admin@example.com")["mfa_token"], totp_code(secret, steps_ahead=1)
    )
    token = session.json()["token"]
    client.cookies.clear()
    bob_id = _id(client, bob)
    # Recent (the sign-in itself showed the factor): allowed.
    assert (
        client.post(f"{USERS}{bob_id}/update", json={"name": "Bob"}, headers=bearer(token)).status_code == 200
    )
    age_step_up(client, token)
    attempts = [
        client.post(f"{USERS}{bob_id}/update", json={"role": "admin"}, headers=bearer(token)),
        client.post(f"{USERS}{bob_id}/sessions/revoke", headers=bearer(token)),
        client.delete(f"{USERS}{bob_id}", headers=bearer(token)),
        client.post("/api/v1/auths/api_keys", json={"name": "k"}, headers=bearer(token)),
        client.post(
            "/api/v1/auths/update/password",
            json={"password": "correct-horse-battery", "new_password": "another-long-password-1"},
            headers=bearer(token),
        ),
        client.post(f"{MFA}/recovery-codes", headers=bearer(token)),
    ]
    for response in attempts:
        assert "Confirm it is you" in refused(response, 403)
    refused(client.post(f"{MFA}/step-up", json={"code": "000001"}, headers=bearer(token)), 400)


def test_step_up_with_a_recovery_code_opens_sensitive_changes(site: Site) -> None:
    client = site()
    admin = new_account(client, "admin@example.com")
    bob = new_account(client, "bob@example.com")
    _, codes = enrol_totp(client, admin)
    token = verify(client, first_step(client, "admin@example.com")["mfa_token"], codes[0]).json()["token"]
    client.cookies.clear()
    age_step_up(client, token)
    update = {"name": "Bob"}
    refused(client.post(f"{USERS}{_id(client, bob)}/update", json=update, headers=bearer(token)), 403)
    stepped = client.post(f"{MFA}/step-up", json={"code": codes[1]}, headers=bearer(token))
    assert stepped.status_code == 200, stepped.text
    assert (
        client.post(f"{USERS}{_id(client, bob)}/update", json=update, headers=bearer(token)).status_code
        == 200
    )


def test_accounts_without_a_factor_see_no_step_up(site: Site) -> None:
    client = site()
    admin = new_account(client, "admin@example.com")
    bob = new_account(client, "bob@example.com")
    response = client.post(f"{USERS}{_id(client, bob)}/update", json={"name": "B"}, headers=bearer(admin))
    assert response.status_code == 200


def test_an_admin_reset_removes_every_factor_and_ends_sessions(site: Site) -> None:
    client = site()
    admin = new_account(client, "admin@example.com")
    bob = new_account(client, "bob@example.com")
    enrol_totp(client, bob)
    refused(client.post(f"{USERS}{_id(client, bob)}/mfa/reset", headers=bearer(bob)), 403)  # not an admin
    assert client.post(f"{USERS}{_id(client, bob)}/mfa/reset", headers=bearer(admin)).json() is True
    refused(client.get("/api/v1/auths/", headers=bearer(bob)), 401)
    assert "mfa_required" not in signin(client, "bob@example.com")
    assert client.get(f"{USERS}{_id(client, bob)}", headers=bearer(admin)).json()["mfa_enabled"] is False


def test_the_provider_word_on_a_second_factor() -> None:
    assert shows_second_factor({"amr": ["pwd", "otp"]}, ())
    assert shows_second_factor({"amr": ["hwk"]}, ())
    assert shows_second_factor({"amr": ["MFA"]}, ())
    assert not shows_second_factor({"amr": ["pwd"]}, ())
    assert not shows_second_factor({"amr": "mfa"}, ())  # not a list: not RFC 8176
    assert not shows_second_factor({}, ())
    assert shows_second_factor({"acr": "urn:example:mfa"}, ("urn:example:mfa",))
    assert not shows_second_factor({"acr": "urn:example:mfa"}, ())


def test_the_command_line_resets_a_locked_out_admin(
    site: Site, base_env: dict[str, str], command: Callable[..., Outcome]
) -> None:
    client = site()
    admin = new_account(client, "admin@example.com")
    enrol_totp(client, admin)
    assert "mfa  " in command(base_env, "user", "list").out
    done = command(base_env, "user", "reset-mfa", "admin@example.com")
    assert done.code == 0, done.err
    assert "no-mfa" in command(base_env, "user", "list").out
    client.cookies.clear()
    assert "mfa_required" not in signin(client, "admin@example.com")
