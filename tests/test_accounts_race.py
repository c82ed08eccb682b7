"""Account invariants under concurrency, over HTTP, on SQLite and a real PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from tests.conftest import ORIGIN, PASSWORD, bearer, refused, signup
from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.http.application import build_application

USERS = "/api/v1/users/"
LAST_ADMIN = "The last administrator cannot be demoted, disabled or deleted."


@pytest.fixture
def instance(
    database_url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[TestClient, Gateway]]:
    """A running instance on the database under test, and its services."""
    settings = make_settings(DATABASE_URL=database_url, DEFAULT_USER_ROLE="user", SIGNUP_RATE_LIMIT="100/1h")
    gateway = Gateway.build(settings)
    with TestClient(build_application(gateway), headers={"origin": ORIGIN}) as client:
        yield client, gateway


def admins(client: TestClient, token: str) -> list[str]:
    """Emails of the active admins, as the API lists them."""
    users = client.get(USERS, headers=bearer(token)).json()["users"]
    return sorted(u["email"] for u in users if u["role"] == "admin" and u["active"])


@pytest.mark.slow
@pytest.mark.parametrize("change", [{"role": "user"}, {"active": False}], ids=["demote", "disable"])
def test_two_admins_removing_each_other_at_once_leave_one_admin(
    instance: tuple[TestClient, Gateway], monkeypatch: pytest.MonkeyPatch, change: dict[str, object]
) -> None:
    client, gateway = instance
    ann, bob = signup(client, "ann@example.com"), signup(client, "bob@example.com")
    promoted = client.post(f"{USERS}{bob['id']}/update", json={"role": "admin"}, headers=bearer(ann["token"]))
    assert promoted.status_code == 200

    # Hold each transaction right after its "is there another admin?" check until both have checked:
    # the interleaving a check-then-write rule loses to (write skew). With the check serialised by a
    # lock, the second request waits inside the check instead, the barrier times out and nothing stalls.
    check = gateway.accounts._require_other_admin
    both_checked = threading.Barrier(2)

    def held_check(db: Session, user_id: str) -> None:
        check(db, user_id)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_checked.wait(timeout=1)

    monkeypatch.setattr(gateway.accounts, "_require_other_admin", held_check)

    def remove(actor: dict[str, str], target: dict[str, str]) -> httpx.Response:
        return client.post(f"{USERS}{target['id']}/update", json=change, headers=bearer(actor["token"]))

    with ThreadPoolExecutor(2) as pool:
        ann_removes_bob = pool.submit(remove, ann, bob)
        bob_removes_ann = pool.submit(remove, bob, ann)
        responses = [ann_removes_bob.result(timeout=30), bob_removes_ann.result(timeout=30)]
    assert sorted(r.status_code for r in responses) == [200, 400], [r.text for r in responses]
    assert refused(next(r for r in responses if r.status_code == 400), 400) == LAST_ADMIN
    winner = ann if responses[0].status_code == 200 else bob
    assert admins(client, winner["token"]) == [winner["email"]]


def test_concurrent_signups_with_one_email_create_one_account(instance: tuple[TestClient, Gateway]) -> None:
    client, _gateway = instance
    admin = signup(client, "admin@example.com")
    count = 10
    start = threading.Barrier(count)

    def attempt(i: int) -> httpx.Response:
        start.wait(timeout=10)
        email = "dup@example.com" if i % 2 else "DUP@Example.com"
        form = {"name": f"Dup {i}", "email": email, "password": PASSWORD}
        return client.post("/api/v1/auths/signup", json=form)

    with ThreadPoolExecutor(count) as pool:
        responses = list(pool.map(attempt, range(count)))
    assert sorted(r.status_code for r in responses) == [200] + [400] * (count - 1), [
        r.text for r in responses
    ]
    for response in responses:
        if response.status_code == 400:
            assert refused(response, 400) == "This email is already registered."
    listing = client.get(USERS, params={"query": "dup@"}, headers=bearer(admin["token"])).json()
    assert listing["total"] == 1


@pytest.mark.slow
def test_batched_last_seen_writes_never_deadlock_with_an_admin_edit(
    database_url: str, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush and an edit lock the same user's rows; in opposite orders PostgreSQL kills one of them."""
    settings = make_settings(
        DATABASE_URL=database_url, SIGNUP_RATE_LIMIT="100/1h", SESSION_SYNC_INTERVAL="60"
    )  # no background flush: this test runs it
    gateway = Gateway.build(settings)
    with TestClient(build_application(gateway), headers={"origin": ORIGIN}) as client:
        ann, bob = signup(client, "ann@example.com"), signup(client, "bob@example.com")
        promoted = client.post(
            f"{USERS}{bob['id']}/update", json={"role": "admin"}, headers=bearer(ann["token"])
        )
        assert promoted.status_code == 200
        assert (
            client.get("/api/v1/auths/", headers=bearer(bob["token"])).status_code == 200
        )  # a touch to write

        # Hold the edit after it has locked bob's row, let the flush run into it, then let the edit go on.
        holding, release = threading.Event(), threading.Event()
        check = gateway.accounts._require_other_admin

        def held_check(db: Session, user_id: str) -> None:
            check(db, user_id)
            holding.set()
            release.wait(5)

        monkeypatch.setattr(gateway.accounts, "_require_other_admin", held_check)
        with ThreadPoolExecutor(2) as pool:
            disable = {"active": False}
            edit = pool.submit(
                client.post, f"{USERS}{bob['id']}/update", json=disable, headers=bearer(ann["token"])
            )
            assert holding.wait(5)
            flush = pool.submit(gateway.registry.flush_touches)
            time.sleep(0.5)  # the flush takes the locks it can get, then waits for the edit's
            release.set()
            assert edit.result(timeout=30).status_code == 200
            flush.result(timeout=30)
        assert refused(client.get("/api/v1/auths/", headers=bearer(bob["token"])), 401)
