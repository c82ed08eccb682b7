"""What a review of the second factors found, each tried and refused: passkey sign-in on an SSO-only
site, digits of other scripts, a new encryption key, a provider's claim outliving a factor, an
expired sign-in finished by passkey, malformed passkey fields, a missing user handle, an old
snapshot of an account overwriting a newer one in the view, and attestations py_webauthn cannot parse."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.fernet import Fernet
from starlette.testclient import TestClient
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

from tests.conftest import PASSWORD, bearer, refused, signin
from tests.mfa.authenticator import Authenticator
from tests.mfa.conftest import (
    MFA,
    enrol_totp,
    first_step,
    gateway_of,
    new_account,
    register_passkey,
    totp_code,
    verify,
)
from wardgate.identity.records import ClientInfo
from wardgate.mfa import service
from wardgate.sessions import registry as registry_module

Site = Callable[..., TestClient]


def _passkey_begin(client: TestClient, mfa_token: str | None = None) -> Any:
    return client.post(
        f"{MFA}/passkeys/signin/begin", json={} if mfa_token is None else {"mfa_token": mfa_token}
    )


def test_no_passkey_sign_in_where_single_sign_on_is_the_only_way(site: Site, device: Authenticator) -> None:
    client = site(ENABLE_PASSWORD_AUTH="false")
    gw = gateway_of(client)
    user = gw.accounts.create_user("A", "a@example.com", PASSWORD, role="admin")
    token = gw.accounts.start_session(user, ClientInfo("127.0.0.1"), "oauth").token.token
    assert register_passkey(client, token, device).status_code == 200  # still a second factor
    assert "provider" in refused(_passkey_begin(client), 403)


# Arabic-Indic, full-width and mixed digits: "\\d" matches them all, hmac.compare_digest does not.
@pytest.mark.parametrize(
    "code", ["\u0661\u0662\u0663\u0664\u0665\u0666", "\uff11\uff12\uff13\uff14\uff15\uff16", "12345\u0666"]
)
def test_digits_of_other_scripts_are_refused_not_a_server_error(site: Site, code: str) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    enrol_totp(client, token)
    refused(verify(client, first_step(client, "ada@example.com")["mfa_token"], code), 400)
    refused(client.post(f"{MFA}/step-up", json={"code": code}, headers=bearer(token)), 400)


def test_setting_an_encryption_key_later_keeps_the_secrets_made_before(site: Site) -> None:
    before = site()
    token = new_account(before, "ada@example.com")
    secret, _ = enrol_totp(before, token)
    after = site(MFA_ENCRYPTION_KEY=Fernet.generate_key().decode())
    done = verify(after, first_step(after, "ada@example.com")["mfa_token"], totp_code(secret, steps_ahead=1))
    assert done.status_code == 200, done.text


def test_a_session_begun_with_a_factor_is_not_exempt_once_the_factor_is_gone(site: Site) -> None:
    client = site(MFA_REQUIRED_ROLES="admin")
    admin = new_account(client, "admin@example.com")
    enrol_totp(client, admin)
    user = new_account(client, "u@example.com")
    secret, codes = enrol_totp(client, user)
    session = verify(
        client, first_step(client, "u@example.com")["mfa_token"], totp_code(secret, steps_ahead=1)
    )
    token = session.json()["token"]
    client.cookies.clear()
    assert (
        client.post(f"{MFA}/totp/disable", json={"code": codes[0]}, headers=bearer(token)).status_code == 200
    )
    user_id = client.get("/api/v1/auths/", headers=bearer(token)).json()["id"]
    promoted = client.post(f"/api/v1/users/{user_id}/update", json={"role": "admin"}, headers=bearer(admin))
    assert promoted.status_code == 200, promoted.text
    assert "second factor" in refused(client.get("/api/v1/users/", headers=bearer(token)), 403)


def test_an_expired_sign_in_cannot_be_finished_with_a_passkey(
    site: Site, device: Authenticator, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = site()
    register_passkey(client, new_account(client, "p@example.com"), device)
    pending = first_step(client, "p@example.com")["mfa_token"]
    begun = _passkey_begin(client, pending).json()
    real = time.time
    monkeypatch.setattr(service, "_now", lambda: int(real()) + service.PENDING_LIFETIME + 1)
    body = {"ceremony": begun["ceremony"], "credential": device.get(begun["options"])}
    refused(client.post(f"{MFA}/passkeys/signin/finish", json=body), 400)


def test_malformed_transports_and_a_missing_user_handle(site: Site, device: Authenticator) -> None:
    client = site()
    token = new_account(client, "p@example.com")
    begun = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(token)).json()
    credential = device.create(begun["options"])
    credential["response"]["transports"] = [{}, ["usb"], 7]
    body = {"ceremony": begun["ceremony"], "name": "k", "credential": credential}
    assert client.post(f"{MFA}/passkeys/register/finish", json=body, headers=bearer(token)).status_code == 200
    started = _passkey_begin(client).json()
    assertion = device.get(started["options"])
    assertion["response"]["userHandle"] = None  # a discoverable credential must name its user
    refused(
        client.post(
            f"{MFA}/passkeys/signin/finish", json={"ceremony": started["ceremony"], "credential": assertion}
        ),
        400,
    )


def test_an_old_snapshot_of_an_account_never_replaces_a_newer_one(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = site(SESSION_SYNC_INTERVAL="60")
    new_account(client, "admin@example.com")
    token = new_account(client, "v@example.com")
    gw = gateway_of(client)
    user_id = gw.codec.verify(token).user_id
    registry = gw.registry
    real_groups = registry_module.load_groups
    armed = {"now": False}

    def groups_then_revoke(db: Any, ids: Any = None) -> Any:
        found = real_groups(db, ids)
        if armed["now"]:  # the reload has read the row; an admin ends every session right now
            armed["now"] = False
            gw.accounts.revoke_all_sessions(user_id, actor="admin@example.com")
        return found

    monkeypatch.setattr(registry_module, "load_groups", groups_then_revoke)
    armed["now"] = True
    registry.user_reloaded(user_id)
    fresh = signin(client, "v@example.com")["token"]
    assert client.get("/api/v1/auths/", headers=bearer(fresh)).status_code == 200
    refused(client.get("/api/v1/auths/", headers=bearer(token)), 401)


def _with_attestation(credential: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    attestation = cbor2.loads(base64url_to_bytes(credential["response"]["attestationObject"]))
    change(attestation)
    credential["response"]["attestationObject"] = bytes_to_base64url(cbor2.dumps(attestation))
    return credential


def _empty_key_array(attestation: dict[str, Any]) -> None:
    data = attestation["authData"]  # rp hash 32, flags 1, counter 4, AAGUID 16, id length 2, id, key
    end_of_id = 55 + int.from_bytes(data[53:55], "big")
    attestation["authData"] = data[:end_of_id] + b"\x80"  # the public key: an empty CBOR array


def _safetynet_of_the_wrong_shape(attestation: dict[str, Any]) -> None:
    attestation["fmt"], attestation["attStmt"] = "android-safetynet", {"ver": "1", "response": {"a": 1}}


@pytest.mark.parametrize(
    "change", [_empty_key_array, _safetynet_of_the_wrong_shape], ids=["key", "statement"]
)
def test_an_attestation_py_webauthn_cannot_parse_is_refused_not_a_server_error(
    site: Site, device: Authenticator, change: Callable[[dict[str, Any]], None]
) -> None:
    """py_webauthn raised IndexError for a public key that is an empty CBOR array (found by review)
    and AttributeError for an android-safetynet statement whose response is not bytes (found by
    fuzzing): neither was caught, a 500 for any signed-in person."""
    client = site()
    token = new_account(client, "p@example.com")
    begun = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(token)).json()
    credential = _with_attestation(device.create(begun["options"]), change)
    body = {"ceremony": begun["ceremony"], "name": "k", "credential": credential}
    refused(client.post(f"{MFA}/passkeys/register/finish", json=body, headers=bearer(token)), 400)


@pytest.mark.parametrize("ending", ["sign-out-everywhere", "password-change"])
def test_a_sign_in_waiting_for_its_second_step_ends_with_the_sessions(site: Site, ending: str) -> None:
    """A sign-in begun with the password before a password change (or a "sign out everywhere")
    was still finished with a code afterwards, for up to five minutes (found by review)."""
    client = site()
    token = new_account(client, "p@example.com")
    _secret, codes = enrol_totp(client, token)
    waiting = first_step(client, "p@example.com")["mfa_token"]  # someone who knows the password
    if ending == "sign-out-everywhere":
        ended = client.post("/api/v1/auths/sessions/revoke", headers=bearer(token))
    else:
        change = {"password": PASSWORD, "new_password": "an-entirely-new-passphrase"}
        ended = client.post("/api/v1/auths/update/password", json=change, headers=bearer(token))
    assert ended.status_code == 200, ended.text
    refused(verify(client, waiting, codes[0]), 400)  # a recovery code: any code would do


def test_sessions_ended_while_the_second_step_finishes_end_it_too(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password change landing between the pending sign-in's consumption and the session's
    start gave the new session the new stamp: it outlived the change (found by review)."""
    client = site()
    token = new_account(client, "p@example.com")
    _secret, codes = enrol_totp(client, token)
    waiting = first_step(client, "p@example.com")["mfa_token"]
    accounts = gateway_of(client).accounts
    current_user = type(accounts).current_user
    calls = 0

    def ended_meanwhile(self: object, user_id: str) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:  # the read after the consumption: the sessions end just before it
            accounts.revoke_all_sessions(user_id)
        return current_user(self, user_id)  # type: ignore[arg-type]

    monkeypatch.setattr(type(accounts), "current_user", ended_meanwhile)
    refused(verify(client, waiting, codes[0]), 400)
    assert calls == 2
