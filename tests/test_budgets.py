"""Budget counters on their own (SQLite and PostgreSQL): what a call may reserve, what settling does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from wardgate.config import Settings
from wardgate.config.model_access import Budget
from wardgate.errors import RateLimitedError
from wardgate.gateway import Gateway
from wardgate.storage import schema
from wardgate.storage.models import BudgetCounter, UsageRecord
from wardgate.usage.budgets import Allowance
from wardgate.usage.recorder import CallRecord

DAY = Budget(100, "1d")
OWN = Allowance("user:u1:1d", "user", "u1", DAY)
TEAM = Allowance("group:team:1d", "group", "team", Budget(1000, "1d"))


@pytest.fixture
def gateway(database_url: str, make_settings: Callable[..., Settings]) -> Iterator[Gateway]:
    gw = Gateway.build(make_settings(DATABASE_URL=database_url))
    schema.upgrade(gw.engine)
    yield gw
    gw.engine.dispose()


def used(gw: Gateway, scope: str) -> int:
    with gw.engine.connect() as conn:
        return int(conn.scalar(select(BudgetCounter.tokens).where(BudgetCounter.scope == scope)) or 0)


def test_a_call_reserves_no_more_than_its_budget_has_left(gateway: Gateway) -> None:
    """Found by review: `num_predict: 1e15` and a disconnect used a group's budget up for the month."""
    held = gateway.budgets.reserve([OWN, TEAM], 10**12)
    assert [tokens for _, _, tokens in held.counters] == [100, 1000]
    assert (used(gateway, OWN.scope), used(gateway, TEAM.scope)) == (100, 1000)
    gateway.budgets.settle(held, 8)  # the call used 8: each counter keeps exactly that
    assert (used(gateway, OWN.scope), used(gateway, TEAM.scope)) == (8, 8)


def test_every_budget_or_none_is_charged(gateway: Gateway) -> None:
    first = gateway.budgets.reserve([OWN], 0)
    gateway.budgets.settle(first, 100)  # used up
    with pytest.raises(RateLimitedError) as refused:
        gateway.budgets.reserve([OWN, TEAM], 5)
    assert "resets at" in refused.value.detail and refused.value.retry_after <= 86400
    assert used(gateway, TEAM.scope) == 0  # the other budget was not charged for the refused call


def test_a_request_budget_counts_calls(gateway: Gateway) -> None:
    calls = Allowance("key:k:1h", "key", "k", Budget(10**6, "1h", requests=2))
    for _ in range(2):
        gateway.budgets.reserve([calls], 0)
    with pytest.raises(RateLimitedError, match="or 2 requests"):
        gateway.budgets.reserve([calls], 0)


def test_a_settlement_the_database_cannot_take_leaves_the_reservation(gateway: Gateway) -> None:
    held = gateway.budgets.reserve([OWN], 40)
    gateway.engine.dispose()
    broken = Gateway.build(
        gateway.settings.model_copy(update={"database_url": "postgresql+psycopg://x@127.0.0.1:1/none"})
    )
    broken.budgets.settle(held, 5)  # logged, not raised: the answer was given already
    assert used(gateway, OWN.scope) == 40


def test_a_record_the_database_refuses_is_dropped_and_the_others_written(gateway: Gateway) -> None:
    """Found by review: one refused row kept its whole batch failing at every flush, for good."""
    good = CallRecord(
        1, "u1", None, "openai", "chat/completions", "m", 1, 2, None, None, 5, 1, 200, False, True, True
    )
    refused = replace(good, model="x" * 300)  # longer than the column: PostgreSQL refuses it
    for record in (good, refused, good):
        gateway.usage.add(record)
    gateway.usage.flush()
    with gateway.engine.connect() as conn:
        models = conn.scalars(select(UsageRecord.model)).all()
    postgres = gateway.engine.dialect.name == "postgresql"
    assert models.count("m") == 2 and len(models) == (2 if postgres else 3)
    assert gateway.usage.pending == 0
