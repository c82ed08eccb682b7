"""GET /api/v1/usage: tokens used through wardgate, and what is left of each budget.

Everyone sees their own usage; admins may ask for anyone's, a key's, a group's or a model's. Signed-in
people only, as every route of wardgate's own API: an API key reads nothing here. Never a prompt or
a completion: wardgate does not keep them.
"""

from __future__ import annotations

from functools import partial

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from wardgate.config.values import Role
from wardgate.errors import NotFoundError, PermissionDeniedError
from wardgate.gateway import Gateway
from wardgate.http.deps import CurrentUser, GatewayDep
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.schemas import LAST_UNIX_TIME
from wardgate.identity.authentication import Caller
from wardgate.sessions.records import UserState
from wardgate.usage.budgets import BudgetState
from wardgate.usage.reports import Grouping, Tally, UsageQuery

router = APIRouter(prefix="/api/v1/usage", tags=["usage"], responses=ERROR_RESPONSES)
ADMINS_ONLY = "Only administrators may see other people's usage."


class Totals(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    unmetered_requests: int = Field(description="Calls whose upstream reported no usage (never counted as 0)")
    incomplete_requests: int = Field(description="Calls that broke off: counted with what was reported")


class ModelUsage(Totals):
    model: str


class GroupUsage(Totals):
    key: str | None = Field(description="The model, user id, key id or day (Unix time of its start)")
    label: str | None = Field(description="The person's email, or the day as YYYY-MM-DD")


class BudgetInfo(BaseModel):
    kind: str = Field(description="key, user or group")
    owner: str
    tokens: int
    period: str
    requests: int | None
    used_tokens: int
    used_requests: int
    remaining_tokens: int
    resets_at: int


class UsageReport(BaseModel):
    since: int
    until: int
    totals: Totals
    by_model: list[ModelUsage]
    groups: list[GroupUsage] | None = None
    budgets: list[BudgetInfo]


def _totals(tally: Tally) -> dict[str, int]:
    return {
        "requests": tally.requests,
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "total_tokens": tally.total_tokens,
        "unmetered_requests": tally.unmetered_requests,
        "incomplete_requests": tally.incomplete_requests,
    }


@router.get("", response_model=UsageReport, summary="Token usage and budgets")
@router.get("/", response_model=UsageReport, include_in_schema=False)
async def usage_report(
    caller: CurrentUser,
    gw: GatewayDep,
    user_id: str | None = Query(None, max_length=64, description="admins: whose usage (default: yours)"),
    api_key_id: str | None = Query(None, max_length=64),
    group: str | None = Query(None, max_length=255, description="admins: the members of a group"),
    model: str | None = Query(None, max_length=200),
    since: int | None = Query(None, ge=0, le=LAST_UNIX_TIME, description="Unix time; default: 30 days ago"),
    until: int | None = Query(None, ge=0, le=LAST_UNIX_TIME, description="Unix time; default: now"),
    group_by: Grouping | None = None,
) -> UsageReport:
    """Totals and usage by model over the period (and by `group_by`), with the budgets of the person
    the report is about."""
    is_admin = caller.user.role == Role.ADMIN
    if not is_admin and (user_id not in (None, caller.user.id) or group is not None):
        raise PermissionDeniedError(ADMINS_ONLY, code="usage_of_others")
    if not is_admin or (user_id is None and group is None and api_key_id is None and not group_by):
        user_id = user_id or caller.user.id  # an admin's report without filters: their own
    query = UsageQuery.of(since, until, user_id=user_id, api_key_id=api_key_id, group=group, model=model)
    return await anyio.to_thread.run_sync(partial(build_report, gw, caller, query, group_by))


def build_report(gw: Gateway, caller: Caller, query: UsageQuery, group_by: Grouping | None) -> UsageReport:
    """The report (also what /account and /admin show)."""
    totals = gw.usage_reports.totals(query)
    by_model = [ModelUsage(model=t.key or "", **_totals(t)) for t in gw.usage_reports.grouped(query, "model")]
    groups = None
    if group_by is not None:
        groups = [
            GroupUsage(key=t.key, label=t.label, **_totals(t))
            for t in gw.usage_reports.grouped(query, group_by)
        ]
    return UsageReport(
        since=query.since,
        until=query.until,
        totals=Totals(**_totals(totals)),
        by_model=by_model,
        groups=groups,
        budgets=[_budget(state) for state in budget_states(gw, caller, query.user_id)],
    )


def budget_states(gw: Gateway, caller: Caller, user_id: str | None) -> list[BudgetState]:
    """The budgets of the person a report is about (none for a report about many)."""
    if user_id is None:
        return []
    person: UserState | None = gw.registry.view.users.get(user_id)
    if person is None:
        raise NotFoundError("User not found.")
    return gw.budgets.states(gw.model_rules.allowances(person))


def _budget(state: BudgetState) -> BudgetInfo:
    allowance, budget = state.allowance, state.allowance.budget
    return BudgetInfo(
        kind=allowance.kind,
        owner=allowance.owner,
        tokens=budget.tokens,
        period=budget.period,
        requests=budget.requests,
        used_tokens=state.used_tokens,
        used_requests=state.used_requests,
        remaining_tokens=state.remaining_tokens,
        resets_at=state.resets_at,
    )
