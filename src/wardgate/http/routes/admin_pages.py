"""The administration page (/admin): users, pending sign-ups, the effective configuration, usage and
the security events, and the changes an admin makes from it (each behind a step-up).

Renders through the helpers of `pages` (the sign-in redirect, the notices, the page cursors, the
"Confirm it is you" form); a refusal is shown on the page it came from, never carried in an address.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from uuid import UUID

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from wardgate.audit.log import AuditQuery
from wardgate.config.values import Role
from wardgate.errors import ApiError, PermissionDeniedError
from wardgate.gateway import Gateway
from wardgate.http.cookies import clear_token_cookie
from wardgate.http.deps import gateway, optional_principal, site
from wardgate.http.forms import form_fields
from wardgate.http.rendering import render
from wardgate.http.routes.pages import (
    NOTICES,
    PAGE_ROWS,
    page_cursor,
    page_path,
    quoted_path,
    second_factors,
    to_auth,
)
from wardgate.http.routes.usage_pages import admin_usage
from wardgate.identity.authentication import Principal
from wardgate.identity.records import UserChanges
from wardgate.identity.rules import ADMIN_REQUIRED, require_admin

router = APIRouter(include_in_schema=False)


# What an admin change says afterwards, next to the row it was made on ({email}: the account's).
_ADMIN_DONE = {
    "approved": ("pending", "{email} is approved: they can use the site now."),
    "rejected": ("pending", "The sign-up is rejected and deleted."),
    "role": ("row", "Saved: {email} is now {role}."),
    "disabled": ("row", "{email} is disabled: every session of theirs has ended and they cannot sign in."),
    "enabled": ("row", "{email} is enabled again: they can sign in."),
    "revoked": ("row", "Every session of {email} has ended: they need to sign in again."),
    "mfa-reset": ("row", NOTICES["mfa-reset"]),
    "deleted": ("users", "The account is deleted."),
}
_ACTIONS = {  # form action: (what it did, where the answer shows)
    "approve": "approved",
    "reject": "rejected",
    "role": "role",
    "disable": "disabled",
    "enable": "enabled",
    "revoke": "revoked",
    "reset-mfa": "mfa-reset",
    "delete": "deleted",
}
EVENT_FILTERS = {  # the "Show" choices of the security events: (label, outcome)
    "all": ("All events", None),
    "refused": ("Refused and failed only", "refused"),
    "failure": ("Failed only", "failure"),
    "success": ("Succeeded only", "success"),
}


@router.get("/admin")
async def admin_page(
    request: Request,
    q: str = "",
    notice: str = "",
    user: str = "",
    after: str | None = None,
    events: str = "all",
    events_after: str | None = None,
) -> Response:
    """Users, pending approvals, the effective configuration and the security events (`after`,
    `events_after`: the cursors of a page of users, of events; `events`: which events to show;
    `notice` and `user`: what the last change did, and to whom)."""
    principal = await optional_principal(request)
    if principal is None:
        return to_auth(request)
    return await _admin_view(
        request,
        principal,
        query=q[:320],
        notice=None if notice in _ADMIN_DONE else NOTICES.get(notice),
        done=(notice, user) if notice in _ADMIN_DONE else None,
        cursor=after,
        event_filter=events if events in EVENT_FILTERS else "all",
        events_cursor=events_after,
    )


async def _admin_view(
    request: Request,
    principal: Principal,
    *,
    query: str = "",
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
    cursor: str | None = None,
    step_up_return: str | None = None,
    done: tuple[str, str] | None = None,
    event_filter: str = "all",
    events_cursor: str | None = None,
) -> Response:
    """The admin page; with `step_up_return`, the "Confirm it is you" form that comes back there."""
    if principal.user.role != Role.ADMIN:
        return render(
            request,
            "error.html",
            principal=principal,
            status_code=403,
            heading="Not allowed",
            message=ADMIN_REQUIRED,
        )
    gw = gateway(request)
    users = await anyio.to_thread.run_sync(
        partial(gw.directory.users, query=query, cursor=page_cursor(cursor), limit=PAGE_ROWS)
    )
    pending = await anyio.to_thread.run_sync(partial(gw.directory.users, role=Role.PENDING, limit=PAGE_ROWS))
    outcome = EVENT_FILTERS[event_filter][1]
    fetch = partial(
        gw.audit.query, AuditQuery(outcome=outcome), cursor=page_cursor(events_cursor), limit=PAGE_ROWS
    )
    events = await anyio.to_thread.run_sync(fetch)
    usage = await admin_usage(gw, principal)
    kinds = await anyio.to_thread.run_sync(gw.mfa.factors.kinds_of, [u.id for u in users.rows])
    confirm = await second_factors(gw, principal) if step_up_return else {}
    return render(
        request,
        "admin.html",
        principal=principal,
        active="admin",
        users=users.rows,
        total=users.total,
        users_next=users.next_cursor,
        users_paged=cursor is not None,
        query=query,
        pending=pending.rows,
        pending_total=pending.total,
        settings=dict(site(request).configuration),
        findings=site(request).findings,
        events=events.rows,
        events_total=events.total,
        events_next=events.next_cursor,
        events_paged=events_cursor is not None,
        event_filter=event_filter,
        event_filters={key: label for key, (label, _outcome) in EVENT_FILTERS.items()},
        feedback=await _feedback(gw, done) if done else None,
        **usage,
        factor_kinds=kinds,
        required_roles={role.value for role in gw.mfa.policy.required_roles},
        **confirm,
        step_up=step_up_return is not None,
        step_up_return=step_up_return,
        notice=notice,
        error=error,
        status_code=status_code,
    )


async def _feedback(gw: Gateway, done: tuple[str, str]) -> dict[str, str] | None:
    """What the last admin change did, in words, and where it shows: in its row, or atop a section
    when the row is gone (the account's email is looked up, never taken from the address)."""
    what, user_id = done
    where, text = _ADMIN_DONE[what]
    email, role = "The account", ""
    if "{email}" in text or where == "row":
        try:
            row = await anyio.to_thread.run_sync(gw.accounts.current_user, str(UUID(user_id)))
        except (ValueError, ApiError):
            return None if where == "row" else {"where": where, "text": text.format(email=email, role=role)}
        email, role = row.email, str(row.role)
    return {
        "where": f"user-{user_id}" if where == "row" else where,
        "text": text.format(email=email, role=role),
    }


async def _admin_action(
    request: Request, user_id: str, change: Callable[[Gateway, Principal], None], action: str
) -> Response:
    """Every admin change needs a recent second factor of the admin (who has one): a step-up.
    Afterwards the page says what was done, next to the row (or the section, once the row is gone),
    with focus there; revoking one's own sessions signs one out, so it ends at the sign-in page."""
    principal = await optional_principal(request)
    done = _ACTIONS.get(action, "")
    where = _ADMIN_DONE[done][0] if done else "users"
    anchor = f"#user-{user_id}" if user_id and where == "row" else f"#{where}"
    if principal is None:
        return to_auth(request, f"/admin{anchor}")
    gw = gateway(request)
    try:
        require_admin(principal.user)
        await anyio.to_thread.run_sync(gw.mfa.require_step_up, principal.user, principal.claims)
        await anyio.to_thread.run_sync(change, gw, principal)
    except ApiError as exc:  # shown on the page it came from; never carried in an address
        stepped = page_path(request, f"/admin?notice=stepped-up{anchor}")
        return await _admin_view(
            request,
            principal,
            error=exc.detail,
            status_code=exc.status_code,
            step_up_return=stepped if exc.code == "step_up_required" else None,
        )
    if action == "revoke" and user_id == principal.user.id:
        back = quoted_path(page_path(request, "/admin"))
        response = RedirectResponse(
            page_path(request, f"/auth?notice=signed-out-everywhere&redirect={back}"), status_code=303
        )
        clear_token_cookie(response, request)
        return response
    location = f"/admin?notice={done}&user={user_id}{anchor}"
    return RedirectResponse(page_path(request, location), status_code=303)


@router.post("/admin/users/{user_id}/{action}")
async def admin_user_form(request: Request, user_id: str, action: str) -> Response:
    """Approve or reject a sign-up; change a role, enable, disable, revoke sessions, reset second
    factors or delete, from the admin page."""
    form = await form_fields(request)
    try:
        user_id = str(UUID(user_id))
    except ValueError:
        user_id = ""  # matches no account: the change below answers "User not found."
    changes = {
        "approve": UserChanges(role=Role.USER.value),
        "role": UserChanges(role=form.get("role", "")),
        "disable": UserChanges(active=False),
        "enable": UserChanges(active=True),
    }

    def change(gw: Gateway, principal: Principal) -> None:
        if action in changes:
            gw.accounts.update_user(principal.user, user_id, changes[action])
        elif action == "revoke":
            gw.accounts.revoke_all_sessions(user_id, actor=principal.user.email)
        elif action in ("delete", "reject"):
            gw.accounts.delete_user(principal.user, user_id)
        elif action == "reset-mfa":
            gw.mfa.reset(principal.user, user_id)
        else:
            raise PermissionDeniedError("Unknown action.")

    return await _admin_action(request, user_id, change, action)
