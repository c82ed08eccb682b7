"""GET /api/v1/audit: the security events, for administrators, with filters and paging."""

from __future__ import annotations

from functools import partial
from typing import Literal

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from wardgate.audit.log import AuditQuery
from wardgate.http.deps import AdminUser, GatewayDep
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.schemas import LAST_UNIX_TIME
from wardgate.storage.paging import COUNT_CAP, MAX_OFFSET

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)


class AuditEventModel(BaseModel):
    """One security event."""

    at: int
    event: str
    outcome: str
    actor: str | None
    subject: str | None
    ip: str | None
    user_agent: str | None
    detail: str | None
    count: int = Field(
        description="Refusals this event stands for: rate-limited ones of one bucket and window share a row"
    )


class AuditPage(BaseModel):
    """A page of events, newest first."""

    events: list[AuditEventModel]
    total: int = Field(description=f"Matching events, counted up to {COUNT_CAP + 1} (more: at least that)")
    page: int
    limit: int
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")


@router.get("", response_model=AuditPage, summary="Security events (admin)")
@router.get("/", response_model=AuditPage, include_in_schema=False)
async def list_events(
    _admin: AdminUser,
    gw: GatewayDep,
    event: str | None = Query(None, max_length=64, description="exact event name, e.g. auth.signin"),
    outcome: Literal["success", "failure", "refused"] | None = None,
    actor: str | None = Query(None, max_length=320),
    subject: str | None = Query(None, max_length=320),
    since: int | None = Query(None, ge=0, le=LAST_UNIX_TIME, description="Unix time, inclusive"),
    until: int | None = Query(None, ge=0, le=LAST_UNIX_TIME, description="Unix time, inclusive"),
    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page"),
    page: int = Query(1, ge=1, le=100000, description=f"numbered pages reach {MAX_OFFSET} rows in"),
    limit: int = Query(50, ge=1, le=500),
) -> AuditPage:
    """Events matching every given filter, newest first; follow `next_cursor` for the next page."""
    filters = AuditQuery(event=event, outcome=outcome, actor=actor, subject=subject, since=since, until=until)
    found = await anyio.to_thread.run_sync(
        partial(gw.audit.query, filters, cursor=cursor, offset=(page - 1) * limit, limit=limit)
    )
    events = [AuditEventModel(**{f: getattr(r, f) for f in AuditEventModel.model_fields}) for r in found.rows]
    return AuditPage(events=events, total=found.total, page=page, limit=limit, next_cursor=found.next_cursor)
