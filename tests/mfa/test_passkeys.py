"""Passkeys through the API with a software authenticator: registration, email-free sign-in, the
second step after a password, and every assertion the relying party must refuse."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from tests.conftest import bearer, refused
from tests.mfa.authenticator import Authenticator
from tests.mfa.conftest import MFA, SITE, first_step, gateway_of, new_account, register_passkey
from wardgate.errors import BadRequestError, RateLimitedError
from wardgate.identity.records import ClientInfo
from wardgate.storage.models import AuditEvent, Passkey

Site = Callable[..., TestClient]


def begin(client: TestClient, mfa_token: str | None = None) -> dict[str, Any]:
    body = {} if mfa_token is None else {"mfa_token": mfa_token}
    response = client.post(f"{MFA}/passkeys/signin/begin", json=body)
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


def finish(client: TestClient, ceremony: str, credential: dict[str, Any]) -> Any:
    return client.post(f"{MFA}/passkeys/signin/finish", json={"ceremony": ceremony, "credential": credential})


def test_register_then_sign_in_without_an_email(site: Site, device: Authenticator) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    added = register_passkey(client, token, device)
    assert added.status_code == 200, added.text
    assert len(added.json()["recovery_codes"]) == 10  # the first factor brings recovery codes
    assert client.get(MFA, headers=bearer(token)).json()["methods"] == ["webauthn", "recovery"]

    started = begin(client)
    assert started["options"]["allowCredentials"] == []  # any passkey of this site: no email asked
    assert started["options"]["userVerification"] == "required"
    done = finish(client, started["ceremony"], device.get(started["options"]))
    assert done.status_code == 200, done.text
    assert done.json()["email"] == "ada@example.com" and "token=" in done.headers["set-cookie"]
    session = done.json()["token"]
    assert client.get(MFA, headers=bearer(session)).json()["step_up_until"] > time.time()  # two factors
    assert not gateway_of(client).codec.verify(session).mfa  # that claim is a provider's word only


def test_a_passkey_as_the_second_step(site: Site, device: Authenticator) -> None:
    client = site()
    ada = new_account(client, "ada@example.com")
    register_passkey(client, ada, device)
    pending = first_step(client, "ada@example.com")
    assert pending["methods"] == ["webauthn", "recovery"]
    started = begin(client, pending["mfa_token"])
    assert len(started["options"]["allowCredentials"]) == 1
    done = finish(client, started["ceremony"], device.get(started["options"]))
    assert done.status_code == 200, done.text
    refused(client.post(f"{MFA}/verify", json={"mfa_token": pending["mfa_token"], "code": "123456"}), 400)


def test_another_account_passkey_cannot_finish_a_pending_sign_in(site: Site) -> None:
    client = site()
    ada_device, bob_device = Authenticator("testserver", SITE), Authenticator("testserver", SITE)
    register_passkey(client, new_account(client, "ada@example.com"), ada_device)
    register_passkey(client, new_account(client, "bob@example.com"), bob_device)
    started = begin(client, first_step(client, "ada@example.com")["mfa_token"])
    bobs = bob_device.get({"challenge": started["options"]["challenge"]})
    refused(finish(client, started["ceremony"], bobs), 400)


def test_replayed_and_stale_assertions_are_refused(site: Site, device: Authenticator) -> None:
    client = site()
    register_passkey(client, new_account(client, "ada@example.com"), device)
    started = begin(client)
    assertion = device.get(started["options"])
    assert finish(client, started["ceremony"], assertion).status_code == 200
    refused(finish(client, started["ceremony"], assertion), 400)  # the same ceremony again
    fresh = begin(client)
    refused(finish(client, fresh["ceremony"], assertion), 400)  # an answer to another challenge
    refused(finish(client, "not-a-ceremony", assertion), 400)


def test_wrong_origin_and_missing_user_verification_are_refused(site: Site, device: Authenticator) -> None:
    client = site()
    register_passkey(client, new_account(client, "ada@example.com"), device)
    started = begin(client)
    refused(
        finish(client, started["ceremony"], device.get(started["options"], origin="http://evil.test")), 400
    )
    started = begin(client)
    refused(finish(client, started["ceremony"], device.get(started["options"], verified=False)), 400)


def test_a_counter_going_back_is_refused_and_audited(site: Site, device: Authenticator) -> None:
    client = site()
    register_passkey(client, new_account(client, "ada@example.com"), device)
    gw = gateway_of(client)
    with gw.sessions() as db, db.begin():
        db.execute(update(Passkey).values(sign_count=10_000))  # as if a clone had signed ahead
    started = begin(client)
    detail = refused(finish(client, started["ceremony"], device.get(started["options"])), 400)
    assert "copied" in detail
    with gw.sessions() as db:
        events = set(db.scalars(select(AuditEvent.event)))
    assert "auth.passkey_clone_suspected" in events


def test_registration_checks_origin_and_ceremony_owner(site: Site, device: Authenticator) -> None:
    client = site()
    ada = new_account(client, "ada@example.com")
    bob = new_account(client, "bob@example.com")
    begun = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(ada)).json()
    body = {"ceremony": begun["ceremony"], "name": "x", "credential": device.create(begun["options"])}
    refused(
        client.post(f"{MFA}/passkeys/register/finish", json=body, headers=bearer(bob)), 400
    )  # bob's session
    other = {**body, "credential": device.create(begun["options"], origin="http://evil.test")}
    refused(client.post(f"{MFA}/passkeys/register/finish", json=other, headers=bearer(ada)), 400)
    bad = {**body, "credential": {"id": "AAAA", "response": {"clientDataJSON": "!!"}}}
    refused(client.post(f"{MFA}/passkeys/register/finish", json=bad, headers=bearer(ada)), 400)


def test_passkeys_need_a_host_name_in_webui_url(make_client: Callable[..., TestClient]) -> None:
    for url in (None, "http://127.0.0.1:8080"):
        client = make_client(**({"WEBUI_URL": url} if url else {}))
        assert "WEBUI_URL" in refused(client.post(f"{MFA}/passkeys/signin/begin", json={}), 400)


def test_removing_a_passkey(site: Site, device: Authenticator) -> None:
    client = site()
    token = new_account(client, "ada@example.com")
    passkey = register_passkey(client, token, device).json()["passkey"]
    refused(
        client.delete(
            f"{MFA}/passkeys/{passkey['id']}", headers=bearer(new_account(client, "b@example.com"))
        ),
        404,
    )
    assert client.delete(f"{MFA}/passkeys/{passkey['id']}", headers=bearer(token)).json() is True
    assert client.get(MFA, headers=bearer(token)).json()["methods"] == []
    started = begin(client)
    refused(finish(client, started["ceremony"], device.get(started["options"])), 400)


def test_failed_passkey_sign_ins_from_one_address_are_limited(site: Site, device: Authenticator) -> None:
    """A passkey sign-in spends the address's failures like a password does (SIGNIN_IP_RATE_LIMIT)."""
    client = site(SIGNIN_IP_RATE_LIMIT="3/1m")
    register_passkey(client, new_account(client, "ada@example.com"), device)
    for _ in range(3):
        started = begin(client)
        refused(
            finish(client, started["ceremony"], device.get(started["options"], origin="http://evil.test")),
            400,
        )
    started = begin(client)
    refused(finish(client, started["ceremony"], device.get(started["options"])), 429)  # even a good one


def test_concurrent_failed_passkey_sign_ins_stay_within_the_address_limit(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check, verify and count run under the address's lock: twenty failures sent at once from one
    address reach the verification exactly as often as the limit allows (the verification is slowed
    here so that, without the lock, all would pass the check before the first is counted)."""
    mfa = gateway_of(site(SIGNIN_IP_RATE_LIMIT="5/1m")).mfa

    def slow_refusal(_ceremony: object, _credential: object) -> None:
        time.sleep(0.05)
        raise BadRequestError("The passkey answer is not valid.", code="passkey_invalid")

    monkeypatch.setattr(mfa, "_open_either", lambda _token: None)
    monkeypatch.setattr(mfa, "_assert", slow_refusal)
    barrier = threading.Barrier(20)

    def attempt(_index: int) -> int:
        barrier.wait(10)
        try:
            mfa.finish_passkey_signin("ceremony", {}, ClientInfo(ip="203.0.113.7"))
        except RateLimitedError:
            return 429
        except BadRequestError:
            return 400
        return 200

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = Counter(pool.map(attempt, range(20)))
    assert statuses == Counter({400: 5, 429: 15})
