"""Who may manage the model server: the configured roles, and never a caller a rule narrows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wardgate.config.model_access import ModelAccess, parse_budget
from wardgate.config.values import Role
from wardgate.errors import PermissionDeniedError
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
