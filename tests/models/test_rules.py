"""Who may manage the model server (the configured roles, and never a caller a rule narrows), and how
many large model requests are parsed at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.conftest import bearer, signup
from wardgate.config.model_access import ModelAccess, parse_budget
from wardgate.config.values import Role
from wardgate.errors import PermissionDeniedError
from wardgate.http.relay import models as models_relay
from wardgate.proxy.models import MANAGE_NARROWED, MANAGE_REQUIRED, ModelRules
from wardgate.sessions.records import UserState

BUDGET = parse_budget({"tokens": 1000, "period": "1d"})


def person(role: Role = Role.ADMIN, **fields: object) -> SimpleNamespace:
    """A signed-in person as the rules see one (a session: no key)."""
    user = UserState("u-1", "ada@example.com", "Ada", role, True, "stamp", **fields)  # type: ignore[arg-type]
    return SimpleNamespace(user=user)


@pytest.mark.parametrize(
    ("access", "fields"),
    [
        (ModelAccess(role_models={Role.ADMIN: ("llama3*",)}), {}),
        (ModelAccess(group_models={"interns": ("llama3*",)}), {"groups": ("interns",)}),
        (ModelAccess(role_budgets={Role.ADMIN: BUDGET}), {}),
        (ModelAccess(group_budgets={"interns": BUDGET}), {"groups": ("interns",)}),
        (ModelAccess(), {"allowed_models": ("llama3*",)}),
        (ModelAccess(), {"token_budget": BUDGET}),
    ],
    ids=["role-models", "group-models", "role-budget", "group-budget", "own-models", "own-budget"],
)
def test_a_narrowed_manager_manages_nothing(access: ModelAccess, fields: dict[str, object]) -> None:
    """Management escapes every rule: a refused model copied to an allowed name, batches never
    metered. The configuration's rules narrow as the person's own do (found by review)."""
    with pytest.raises(PermissionDeniedError, match="beyond any list of models") as refused:
        ModelRules(access).require_manager(person(**fields))  # type: ignore[arg-type]
    assert refused.value.detail == MANAGE_NARROWED


def test_managers_are_the_configured_roles() -> None:
    ModelRules(ModelAccess()).require_manager(person())  # type: ignore[arg-type]
    unrelated = ModelAccess(group_models={"others": ("x",)}, role_budgets={Role.USER: BUDGET})
    ModelRules(unrelated).require_manager(person(groups=("staff",)))  # type: ignore[arg-type]
    with pytest.raises(PermissionDeniedError) as refused:
        ModelRules(ModelAccess()).require_manager(person(Role.USER))  # type: ignore[arg-type]
    assert refused.value.detail == MANAGE_REQUIRED


def test_large_model_requests_are_parsed_two_at_a_time(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each large parse holds about twenty times the body in memory and the interpreter lock: eight
    at once took 394 MiB and stalled the loop for a second (found by review)."""
    client = make_client(OLLAMA_BASE_URL="http://127.0.0.1:9")  # nothing answers there: a 502 after
    token = signup(client, "ada@example.com")["token"]
    parse = models_relay.read_json_request
    lock, running, most = threading.Lock(), [0], [0]

    def counted(*args: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.2)
            return parse(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(models_relay, "read_json_request", counted)
    body = {"model": "llama3", "messages": [{"role": "user", "content": "x" * (300 * 1024)}]}

    def call(_: int) -> int:
        return client.post("/ollama/api/chat", json=body, headers=bearer(token)).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(call, range(6)))
    assert statuses == [502] * 6 and most[0] == 2  # two at a time, and never more
