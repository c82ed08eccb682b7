"""A budget holds across three instances on one PostgreSQL and one Redis, under 50 concurrent calls,
and still holds with Redis stopped (the counters are in the database every instance shares)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, SECRET, bearer, postgres_database
from tests.scaleout.harness import Instance, PrivateRedis, start_together, wait_for

pytestmark = pytest.mark.slow
LIMIT = 200
PROMPT = "say three words"  # 3 prompt tokens; max_tokens 10: 13 tokens a call, 10 reserved
CALLS = 50


@pytest.fixture(scope="module")
def cluster(
    models_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Instance], PrivateRedis]]:
    workdir = tmp_path_factory.mktemp("budgets")
    redis_server = PrivateRedis(workdir)
    databases = postgres_database()
    instances: list[Instance] = []
    try:  # whatever fails to start, what did start is stopped
        redis_server.start()
        env = {
            "DATABASE_URL": next(databases),
            "REDIS_URL": redis_server.url,
            "WEBUI_SECRET_KEY": SECRET,
            "SESSION_SYNC_INTERVAL": "1",
            "DEFAULT_USER_ROLE": "user",
            "SIGNUP_RATE_LIMIT": "1000/1h",
            "OPENAI_API_BASE_URL": f"{models_server}/v1",
        }
        instances = [Instance(name, dict(env), workdir / name) for name in ("A", "B", "C")]
        start_together(instances)
        yield instances, redis_server
    finally:
        for instance in instances:
            instance.stop()
        redis_server.stop()
        databases.close()


def signup(base: str, email: str) -> dict[str, str]:
    body = {"name": "Someone", "email": email, "password": PASSWORD}
    response = httpx.post(f"{base}/api/v1/auths/signup", json=body, headers={"origin": base})
    assert response.status_code == 200, response.text
    found: dict[str, str] = response.json()
    return found


def usage(base: str, token: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{base}/api/v1/usage", headers=bearer(token)).json()
    return found


def call(base: str, token: str) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 10}
    return httpx.post(f"{base}/openai/chat/completions", json=body, headers=bearer(token), timeout=30)


def test_fifty_concurrent_calls_on_three_instances_overshoot_by_no_more_than_the_bound(
    cluster: tuple[list[Instance], PrivateRedis],
) -> None:
    instances, redis_server = cluster
    bases = [i.url for i in instances]
    admin = signup(bases[0], "admin@example.com")
    person = signup(bases[1], "ann@example.com")
    update = f"{bases[0]}/api/v1/users/{person['id']}/update"
    budget = {"token_budget": {"tokens": LIMIT, "period": "1d"}}
    assert httpx.post(update, json=budget, headers=bearer(admin["token"])).status_code == 200
    for base in bases:  # every instance has the change (through the channel, or the poll within a second)
        wait_for(lambda b=base: len(usage(b, person["token"])["budgets"]) == 1, timeout=10, what="the budget")
    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        answers = list(pool.map(lambda n: call(bases[n % 3], person["token"]), range(CALLS)))
    statuses = sorted({a.status_code for a in answers})
    admitted = sum(a.status_code == 200 for a in answers)
    assert statuses == [200, 429], statuses
    for refused in (a for a in answers if a.status_code == 429):
        assert "used up" in refused.json()["detail"] and refused.headers["retry-after"].isdigit()
    used = 13 * admitted
    # The bound (README, "Budgets"): past the limit, at most what the calls in flight when it ran out
    # use beyond their reservations (their prompts: 3 tokens each), plus the call that crossed it.
    assert LIMIT <= used <= LIMIT + 13 + 3 * (CALLS - 1), (admitted, used)
    (own,) = usage(bases[2], person["token"])["budgets"]
    assert own["used_tokens"] == used and own["remaining_tokens"] == 0  # the counter is exact once settled

    redis_server.stop()  # the shared cache and channel gone: the budget is still the database's
    try:
        after = [call(base, person["token"]) for base in bases]
        assert [a.status_code for a in after] == [429, 429, 429]
    finally:
        redis_server.start()
