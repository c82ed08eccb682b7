"""Token budgets that hold across instances: counters in the shared database, checked before a call.

Which budgets apply to a call (`allowances`): the API key's own; the person's own (`token_budget`),
or else their role's (one counter per person either way); and each budget of a group they are in
(one pool the group shares). Every one of them must have tokens left.

Before a call is forwarded, `reserve` charges each budget's counter for the current period in one
transaction, with the counter's row locked (so instances sharing the database cannot both take the
last of a budget unseen): one request, and the tokens the call states it may produce (`max_tokens`,
`num_predict`, …) but no more than the budget has left. A call is admitted only while every budget
has tokens (and requests) left. When the answer is done, `settle` replaces the reservation with
the tokens the upstream reported (or, when it reported none, an estimate: see the relay).

The bound on overshoot: a call's usage is known only when it ends, so a budget can be exceeded by
at most what the calls in flight when it ran out use beyond what they reserved.

Fail closed: when the database cannot answer, the call is refused (503), never let through
unmetered. Periods are calendar windows in UTC (`Budget.window`).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.config.model_access import Budget, ModelAccess
from wardgate.config.values import Role
from wardgate.errors import RateLimitedError, StoreUnavailableError
from wardgate.storage.models import BudgetCounter
from wardgate.storage.retention import prune_before

log = logging.getLogger(__name__)
PERIOD_NAMES = {"1h": "an hour", "1d": "a day", "7d": "a week", "30d": "a month"}
_PERIOD_SECONDS = {"1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 31 * 86400}


@dataclass(frozen=True, slots=True)
class Allowance:
    """One budget that applies to a call: its counter's scope and whose it is."""

    scope: str  # e.g. "user:<id>:1d": the counter, per period
    kind: str  # "key", "user" or "group"
    owner: str  # key id, user id or group name
    budget: Budget

    @property
    def label(self) -> str:
        return {"key": "this API key", "user": "your account"}.get(self.kind, f"the group {self.owner}")


def allowances(
    access: ModelAccess,
    *,
    user_id: str,
    role: Role,
    groups: Sequence[str],
    own: Budget | None,
    key_id: str | None = None,
    key_budget: Budget | None = None,
) -> list[Allowance]:
    """The budgets a call by this person (and key) is charged to, in a fixed order (lock order)."""
    found: list[Allowance] = []
    if key_id is not None and key_budget is not None:
        found.append(Allowance(f"key:{key_id}:{key_budget.period}", "key", key_id, key_budget))
    personal = own if own is not None else access.role_budgets.get(role)
    if personal is not None:
        found.append(Allowance(f"user:{user_id}:{personal.period}", "user", user_id, personal))
    for group in sorted(set(groups)):
        budget = access.group_budgets.get(group)
        if budget is not None:
            found.append(Allowance(f"group:{group}:{budget.period}", "group", group, budget))
    return sorted(found, key=lambda a: a.scope)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `reserve` charged: per counter (scope, period start), the tokens set aside there."""

    counters: tuple[tuple[str, int, int], ...]
    tokens: int  # what the call asked to set aside


@dataclass(frozen=True, slots=True)
class BudgetState:
    """How much of a budget is used in the current period."""

    allowance: Allowance
    used_tokens: int
    used_requests: int
    resets_at: int

    @property
    def remaining_tokens(self) -> int:
        return max(0, self.allowance.budget.tokens - self.used_tokens)


class BudgetLedger:
    """The budget counters, in the database every instance shares."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def reserve(self, found: Sequence[Allowance], tokens: int, *, now: float | None = None) -> Reservation:
        """Charge one request and `tokens` to every budget, or none of them: RateLimitedError (429)
        naming the first that is used up; StoreUnavailableError when the database cannot answer."""
        at = time.time() if now is None else now
        counters: list[tuple[str, int, int]] = []
        if not found:
            return Reservation((), tokens)
        try:
            with self._sessions() as db, db.begin():
                for allowance in found:
                    start, end = allowance.budget.window(at)
                    self._ensure(db, allowance.scope, start, end)
                    where = (BudgetCounter.scope == allowance.scope, BudgetCounter.window_start == start)
                    used, requests = db.execute(
                        select(BudgetCounter.tokens, BudgetCounter.requests).where(*where).with_for_update()
                    ).one()
                    limit = allowance.budget
                    if used >= limit.tokens or (limit.requests is not None and requests >= limit.requests):
                        raise _used_up(allowance, end, at)  # the transaction (every charge) is undone
                    held = min(tokens, limit.tokens - used)
                    db.execute(
                        update(BudgetCounter)
                        .where(*where)
                        .values(tokens=BudgetCounter.tokens + held, requests=BudgetCounter.requests + 1)
                    )
                    counters.append((allowance.scope, start, held))
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(
                "the budget counters cannot be read; no model call is let through unmetered"
            ) from exc
        return Reservation(tuple(counters), tokens)

    def settle(self, reservation: Reservation, used: int) -> None:
        """Replace the reserved tokens with those the call used. A database that cannot answer now
        leaves the reservation standing (logged): the answer has been given, and is not undone."""
        changes = [(scope, start, used - held) for scope, start, held in reservation.counters if used != held]
        if not changes:
            return
        try:
            with self._sessions() as db, db.begin():
                for scope, start, delta in changes:
                    db.execute(
                        update(BudgetCounter)
                        .where(BudgetCounter.scope == scope, BudgetCounter.window_start == start)
                        .values(tokens=BudgetCounter.tokens + delta)
                    )
        except SQLAlchemyError as exc:
            log.warning("budget counters not settled (%s); the reservations stand", type(exc).__name__)

    def states(self, found: Sequence[Allowance], *, now: float | None = None) -> list[BudgetState]:
        """Each budget's use in its current period (for the usage API and the pages)."""
        at = time.time() if now is None else now
        windows = {a.scope: a.budget.window(at) for a in found}
        with self._sessions() as db:
            rows: Mapping[tuple[str, int], tuple[int, int]] = {
                (scope, start): (tokens, requests)
                for scope, start, tokens, requests in db.execute(
                    select(
                        BudgetCounter.scope,
                        BudgetCounter.window_start,
                        BudgetCounter.tokens,
                        BudgetCounter.requests,
                    ).where(BudgetCounter.scope.in_(list(windows)))
                )
            }
        states = []
        for allowance in found:
            start, end = windows[allowance.scope]
            tokens, requests = rows.get((allowance.scope, start), (0, 0))
            states.append(BudgetState(allowance, tokens, requests, end))
        return states

    def prune(self, now: int, stopping: threading.Event) -> int:
        """Delete counters of periods that ended a day ago or more (a housekeeping job)."""
        return prune_before(self._sessions, BudgetCounter.expires_at, now - 86400, stopping=stopping)

    @staticmethod
    def _ensure(db: Session, scope: str, start: int, end: int) -> None:
        values = {"scope": scope, "window_start": start, "tokens": 0, "requests": 0, "expires_at": end}
        # The dialect's own INSERT (ON CONFLICT): its module is loaded already, by the engine.
        dialect = importlib.import_module(f"sqlalchemy.dialects.{db.get_bind().dialect.name}")
        db.execute(dialect.insert(BudgetCounter).values(**values).on_conflict_do_nothing())


def _used_up(allowance: Allowance, resets_at: int, now: float) -> RateLimitedError:
    budget = allowance.budget
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(resets_at))
    return RateLimitedError(
        f"The token budget of {allowance.label} ({budget.tokens} tokens"
        f"{f' or {budget.requests} requests' if budget.requests is not None else ''} "
        f"{PERIOD_NAMES[budget.period]}) is used up; it resets at {when}.",
        retry_after=int(resets_at - now) + 1,
        code="budget_exhausted",
        bucket=f"budget:{allowance.scope}",
        window=_PERIOD_SECONDS[budget.period],
    )
