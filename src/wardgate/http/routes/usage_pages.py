"""Usage on the pages: a person's own on /account, everyone's on /admin (charts and a CSV export)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from wardgate.config.values import Role
from wardgate.gateway import Gateway
from wardgate.http.charts import columns, rows
from wardgate.http.deps import gateway, optional_principal
from wardgate.http.routes.usage import build_report
from wardgate.identity.authentication import Principal
from wardgate.usage.reports import MAX_DAYS, UsageQuery

router = APIRouter(include_in_schema=False)
PERIOD_NOW = {"1h": "this hour", "1d": "today", "7d": "this week", "30d": "this month"}
DAYS = 30
TOP = 10


async def account_usage(gw: Gateway, principal: Principal) -> dict[str, Any]:
    """The person's usage of the last 30 days by model, and their budgets."""
    query = UsageQuery.of(None, None, user_id=principal.user.id)
    report = await anyio.to_thread.run_sync(partial(build_report, gw, principal, query, None))
    budgets = [
        {**b.model_dump(), "period_now": PERIOD_NOW[b.period], "resets": _when(b.resets_at)}
        for b in report.budgets
    ]
    return {"usage": report, "budgets": budgets}


async def admin_usage(gw: Gateway, principal: Principal) -> dict[str, Any]:
    """Everyone's usage of the last 30 days: tokens per day, the top people and models."""
    now = int(time.time())
    query = UsageQuery.of(now - now % 86400 - (DAYS - 1) * 86400, now)

    def read() -> dict[str, Any]:
        reports = gw.usage_reports
        by_day = {t.label: t.total_tokens for t in reports.grouped(query, "day")}
        days = [time.strftime("%Y-%m-%d", time.gmtime(query.since + i * 86400)) for i in range(DAYS)]
        people = reports.grouped(query, "user")[:TOP]
        models = reports.grouped(query, "model")[:TOP]
        return {
            "usage_totals": reports.totals(query),
            "usage_days": columns("Tokens per day, last 30 days", [(d, by_day.get(d, 0)) for d in days]),
            "usage_people": rows("Tokens by person", [(t.label or "", t.total_tokens) for t in people]),
            "usage_models": rows("Tokens by model", [(t.key or "", t.total_tokens) for t in models]),
        }

    return await anyio.to_thread.run_sync(read)


@router.get("/admin/usage.csv")
async def usage_csv(request: Request, days: int = Query(DAYS, ge=1, le=MAX_DAYS)) -> Response:
    """Usage per day, person and model as CSV (admins, signed in on the pages)."""
    principal = await optional_principal(request)
    if principal is None or principal.user.role != Role.ADMIN:
        return Response("Administrators only.\n", status_code=403, media_type="text/plain")
    gw = gateway(request)
    now = int(time.time())
    query = UsageQuery.of(now - days * 86400, now)
    lines: list[str] = await anyio.to_thread.run_sync(lambda: list(gw.usage_reports.csv_rows(query)))

    def body() -> Iterator[str]:
        yield from lines

    name = f"wardgate-usage-{time.strftime('%Y%m%d', time.gmtime(now))}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    return StreamingResponse(body(), media_type="text/csv; charset=utf-8", headers=headers)


def _when(at: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
