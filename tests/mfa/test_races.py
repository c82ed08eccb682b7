"""Two changes of one account's factors at once, on PostgreSQL: `users.mfa_enabled` must agree with
the factor rows afterwards, and a role that requires a factor must keep one. The window between
reading the factor rows and committing is widened (as a slow database would) to make the overlap
certain; before the account's row lock, both cases below broke (the reviewer's reproduction)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from tests.conftest import PASSWORD, bearer, postgres_database
from tests.mfa.authenticator import Authenticator
from tests.mfa.conftest import MFA, enrol_totp, gateway_of, new_account, totp_code
from wardgate.mfa.factors import FactorStore
from wardgate.storage.models import Passkey, TotpFactor, User

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[str]:
    yield from postgres_database()


@pytest.fixture
def slow_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    real = FactorStore._mark

    def slow(db: Session, user_id: str) -> None:
        real(db, user_id)
        time.sleep(0.4)

    monkeypatch.setattr(FactorStore, "_mark", staticmethod(slow))


def _together(*calls: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]().status_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    return results


def _state(client: TestClient, email: str) -> tuple[bool, int]:
    with gateway_of(client).sessions() as db:
        user = db.scalar(select(User).where(User.email == email))
        assert user is not None
        passkeys = db.scalar(select(func.count()).select_from(Passkey).where(Passkey.user_id == user.id))
        totp = db.scalar(
            select(func.count())
            .select_from(TotpFactor)
            .where(TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_not(None))
        )
        return bool(user.mfa_enabled), int(passkeys or 0) + int(totp or 0)


def test_adding_a_passkey_while_the_app_is_turned_off(
    site: Callable[..., TestClient], device: Authenticator, database: str, slow_mark: None
) -> None:
    client = site(DATABASE_URL=database)
    new_account(client, "first@example.com")
    token = new_account(client, "u@example.com")
    _, codes = enrol_totp(client, token)
    begun = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(token)).json()
    finish = {"ceremony": begun["ceremony"], "name": "k", "credential": device.create(begun["options"])}
    results = _together(
        lambda: client.post(f"{MFA}/passkeys/register/finish", json=finish, headers=bearer(token)),
        lambda: client.post(f"{MFA}/totp/disable", json={"code": codes[0]}, headers=bearer(token)),
    )
    assert results == [200, 200]
    assert _state(client, "u@example.com") == (True, 1)
    signin = client.post("/api/v1/auths/signin", json={"email": "u@example.com", "password": PASSWORD})
    assert signin.json().get("mfa_required") is True


def test_removing_both_factors_of_a_required_role_at_once(
    site: Callable[..., TestClient], device: Authenticator, database: str, slow_mark: None
) -> None:
    client = site(DATABASE_URL=database, MFA_REQUIRED_ROLES="admin")
    token = new_account(client, "admin@example.com")
    secret, codes = enrol_totp(client, token)
    added = client.post(f"{MFA}/passkeys/register/begin", headers=bearer(token)).json()
    body = {"ceremony": added["ceremony"], "name": "k", "credential": device.create(added["options"])}
    passkey = client.post(f"{MFA}/passkeys/register/finish", json=body, headers=bearer(token)).json()
    results = _together(
        lambda: client.post(f"{MFA}/totp/disable", json={"code": codes[0]}, headers=bearer(token)),
        lambda: client.delete(f"{MFA}/passkeys/{passkey['passkey']['id']}", headers=bearer(token)),
    )
    assert sorted(results) == [200, 400]  # one of them is the last factor
    enabled, factors = _state(client, "admin@example.com")
    assert enabled and factors == 1
    assert totp_code(secret)  # the secret is still the account's when TOTP is the one left
