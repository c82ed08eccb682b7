"""Single use across instances: two wardgates on one PostgreSQL and one Redis, as in production."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient

from tests.conftest import REDIS_URL, postgres_database, refused
from tests.mfa.conftest import SITE, enrol_totp, first_step, new_account, totp_code, verify

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def shared_database() -> Iterator[str]:
    yield from postgres_database()


def test_a_code_used_on_one_instance_is_refused_on_another(
    make_client: Callable[..., TestClient], shared_database: str
) -> None:
    settings = {
        "WEBUI_URL": SITE,
        "DATABASE_URL": shared_database,
        "REDIS_URL": REDIS_URL or "",
        "REDIS_KEY_PREFIX": f"mfa-{shared_database.rsplit('/', 1)[1]}",  # limits of its own
    }
    a, b = make_client(**settings), make_client(**settings)
    token = new_account(a, "ada@example.com")
    secret, codes = enrol_totp(a, token)
    code = totp_code(secret, steps_ahead=1)
    assert verify(a, first_step(a, "ada@example.com")["mfa_token"], code).status_code == 200
    refused(verify(b, first_step(b, "ada@example.com")["mfa_token"], code), 400)
    # A recovery code too, and a pending sign-in opened on A is finished once, wherever.
    pending = first_step(a, "ada@example.com")["mfa_token"]
    assert verify(b, pending, codes[0]).status_code == 200
    refused(verify(a, pending, codes[1]), 400)
    refused(verify(a, first_step(a, "ada@example.com")["mfa_token"], codes[0]), 400)


def test_code_attempts_are_counted_across_instances(
    make_client: Callable[..., TestClient], shared_database: str
) -> None:
    settings = {
        "WEBUI_URL": SITE,
        "DATABASE_URL": shared_database,
        "REDIS_URL": REDIS_URL or "",
        "MFA_RATE_LIMIT": "4/5m",
        "REDIS_KEY_PREFIX": f"mfa-{shared_database.rsplit('/', 1)[1]}",
    }
    a, b = make_client(**settings), make_client(**settings)
    token = new_account(a, "ada@example.com")
    secret, _ = enrol_totp(a, token)  # one attempt
    refused(verify(a, first_step(a, "ada@example.com")["mfa_token"], "000001"), 400)
    refused(verify(b, first_step(b, "ada@example.com")["mfa_token"], "000001"), 400)
    refused(verify(a, first_step(a, "ada@example.com")["mfa_token"], "000001"), 400)
    refused(verify(b, first_step(b, "ada@example.com")["mfa_token"], totp_code(secret, steps_ahead=1)), 429)
