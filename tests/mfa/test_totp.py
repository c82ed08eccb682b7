"""TOTP and recovery codes through the API: enrolment, the sign-in step and everything it refuses."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import create_engine, select, update
from starlette.testclient import TestClient

from tests.conftest import bearer, refused, signin
from tests.mfa.conftest import MFA, enrol_totp, first_step, gateway_of, new_account, totp_code, verify
from wardgate.storage.models import AuditEvent, AuthSession, PendingSignin, TotpFactor

Site = Callable[..., TestClient]


def _db(client: TestClient) -> str:
    return gateway_of(client).engine.url.render_as_string(hide_password=False)


def test_an_account_without_a_factor_signs_in_as_before(site: Site) -> None:
    client = site()
    new_account(client, "ada@example.com")
    body = signin(client, "ada@example.com")
    assert {"token", "id", "email", "role"} <= set(body)
    assert "mfa_required" not in body


def test_enrolment_then_the_sign_in_step(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    secret, codes = enrol_totp(client, token)
    assert len(codes) == 10 and len(set(codes)) == 10
    status = client.get(MFA, headers=bearer(token)).json()
    assert status["methods"] == ["totp", "recovery"] and status["recovery_codes_left"] == 10
    assert secret not in str(status)

    body = first_step(client, "ada@example.com")
    assert set(body) == {"mfa_required", "mfa_token", "methods"}
    assert body["methods"] == ["totp", "recovery"]
    done = verify(client, body["mfa_token"], totp_code(secret, steps_ahead=1))
    assert done.status_code == 200, done.text
    assert "token=" in done.headers["set-cookie"]
    session = done.json()["token"]
    assert client.get("/api/v1/auths/", headers=bearer(session)).status_code == 200


def test_the_secret_is_encrypted_at_rest_and_never_listed(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    secret, _ = enrol_totp(client, token)
    engine = create_engine(_db(client))
    with engine.connect() as conn:
        stored = conn.execute(select(TotpFactor.ciphertext)).scalar_one()
    engine.dispose()
    assert secret not in stored and secret.lower() not in stored.lower()


def test_a_code_is_accepted_once_and_earlier_steps_never(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    secret, _ = enrol_totp(client, token)
    later = totp_code(secret, steps_ahead=1)
    assert verify(client, first_step(client, "ada@example.com")["mfa_token"], later).status_code == 200
    again = first_step(client, "ada@example.com")["mfa_token"]
    assert "not valid" in refused(verify(client, again, later), 400)  # the same code
    assert "not valid" in refused(verify(client, again, totp_code(secret)), 400)  # an earlier step


def test_wrong_and_other_account_codes_are_refused(site: Site) -> None:
    client = site()
    ada = new_account(client, "ada@example.com")
    bob = new_account(client, "bob@example.com")
    ada_secret, _ = enrol_totp(client, ada)
    bob_secret, bob_codes = enrol_totp(client, bob)
    pending = first_step(client, "ada@example.com")["mfa_token"]
    wrong = f"{(int(totp_code(ada_secret, steps_ahead=1)) + 1) % 1_000_000:06d}"
    refused(verify(client, pending, wrong), 400)
    refused(verify(client, pending, totp_code(bob_secret, steps_ahead=1)), 400)  # bob's code
    refused(verify(client, pending, bob_codes[0]), 400)  # bob's recovery code
    refused(verify(client, pending, "not a code"), 400)


def test_five_wrong_codes_end_the_token(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    secret, _ = enrol_totp(client, token)
    pending = first_step(client, "ada@example.com")["mfa_token"]
    for _ in range(5):
        refused(verify(client, pending, "000000" if totp_code(secret) != "000000" else "111111"), 400)
    detail = refused(verify(client, pending, totp_code(secret, steps_ahead=1)), 400)
    assert "sign in again" in detail.lower()


def test_a_token_is_single_use_and_expires(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    secret, codes = enrol_totp(client, token)
    pending = first_step(client, "ada@example.com")["mfa_token"]
    assert verify(client, pending, codes[0]).status_code == 200
    refused(verify(client, pending, codes[1]), 400)  # replayed token

    stale = first_step(client, "ada@example.com")["mfa_token"]
    engine = create_engine(_db(client))
    with engine.begin() as conn:
        conn.execute(update(PendingSignin).values(expires_at=int(time.time()) - 1))
    engine.dispose()
    refused(verify(client, stale, totp_code(secret, steps_ahead=1)), 400)
    refused(verify(client, "made-up-token", codes[2]), 400)


def test_a_recovery_code_works_once(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    _, codes = enrol_totp(client, token)
    assert (
        verify(client, first_step(client, "ada@example.com")["mfa_token"], codes[3].upper()).status_code
        == 200
    )
    refused(verify(client, first_step(client, "ada@example.com")["mfa_token"], codes[3]), 400)
    left = client.get(MFA, headers=bearer(token)).json()["recovery_codes_left"]
    assert left == 9


def test_regenerated_codes_end_the_old_set(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    _, old = enrol_totp(client, token)
    fresh = client.post(f"{MFA}/recovery-codes", headers=bearer(token))
    assert fresh.status_code == 200, fresh.text
    new = fresh.json()["recovery_codes"]
    refused(verify(client, first_step(client, "ada@example.com")["mfa_token"], old[0]), 400)
    assert verify(client, first_step(client, "ada@example.com")["mfa_token"], new[0]).status_code == 200


def test_code_guessing_is_limited_per_account_across_tokens(site: Site) -> None:
    client = site(MFA_RATE_LIMIT="3/5m")
    token = new_account(client, "ada@example.com")
    secret, _ = enrol_totp(client, token)  # the confirming code counted once
    for _ in range(2):
        refused(verify(client, first_step(client, "ada@example.com")["mfa_token"], "000001"), 400)
    pending = first_step(client, "ada@example.com")["mfa_token"]
    refused(verify(client, pending, totp_code(secret, steps_ahead=1)), 429)  # even the right code waits


def test_every_step_is_audited(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    enrol_totp(client, token)
    refused(verify(client, first_step(client, "ada@example.com")["mfa_token"], "000001"), 400)
    engine = create_engine(_db(client))
    with engine.connect() as conn:
        events = {(e, o) for e, o in conn.execute(select(AuditEvent.event, AuditEvent.outcome))}
    engine.dispose()
    assert {("mfa.totp_enabled", "success"), ("auth.mfa_challenge", "success")} <= events
    assert ("auth.mfa_verified", "failure") in events


def test_setup_needs_a_fresh_sign_in_and_cannot_replace_an_enabled_app(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    enrol_totp(client, token)
    assert refused(client.post(f"{MFA}/totp/setup", headers=bearer(token)), 409)


def test_an_old_session_cannot_add_the_first_factor(site: Site) -> None:
    client = site()
    new_account(client, "ada@example.com")
    gw = gateway_of(client)
    user = gw.accounts.find_by_email("ada@example.com")
    old = gw.codec.issue(user.id, user.session_stamp, now=time.time() - 3600)
    with gw.sessions() as db, db.begin():
        db.add(
            AuthSession(
                id=old.session_id,
                user_id=user.id,
                created_at=old.issued_at,
                expires_at=old.expires_at,
                last_seen_at=old.issued_at,
            )
        )
    detail = refused(client.post(f"{MFA}/totp/setup", headers=bearer(old.token)), 403)
    assert "sign in again" in detail.lower()


def test_disable_needs_a_code_or_a_recent_factor(site: Site) -> None:
    client = site(MFA_STEP_UP_MAX_AGE="1m")
    token = new_account(client, "ada@example.com")
    secret, codes = enrol_totp(client, token)
    pending = first_step(client, "ada@example.com")["mfa_token"]
    fresh = verify(client, pending, totp_code(secret, steps_ahead=1)).json()["token"]
    client.cookies.clear()
    age_step_up(client, fresh)
    assert (
        "confirm it is you"
        in refused(client.post(f"{MFA}/totp/disable", json={}, headers=bearer(fresh)), 403).lower()
    )
    refused(client.post(f"{MFA}/totp/disable", json={"code": "000001"}, headers=bearer(fresh)), 400)
    done = client.post(f"{MFA}/totp/disable", json={"code": codes[0]}, headers=bearer(fresh))
    assert done.status_code == 200, done.text
    status = client.get(MFA, headers=bearer(fresh)).json()
    assert status["totp"] is False and status["methods"] == [] and status["recovery_codes_left"] == 0
    assert "mfa_required" not in signin(client, "ada@example.com")


def age_step_up(client: TestClient, token: str) -> None:
    """Make the session's last second factor older than MFA_STEP_UP_MAX_AGE."""
    gw = gateway_of(client)
    claims = gw.codec.verify(token)
    with gw.sessions() as db, db.begin():
        db.execute(
            update(AuthSession)
            .where(AuthSession.id == claims.session_id)
            .values(mfa_at=int(time.time()) - 3600)
        )


def test_unknown_fields_are_refused(site: Site) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    response = client.post(
        f"{MFA}/totp/enable", json={"code": "123456", "force": True}, headers=bearer(token)
    )
    assert response.status_code == 422
    assert client.post(f"{MFA}/verify", json={"mfa_token": "x", "code": "1", "user": "b"}).status_code == 422
