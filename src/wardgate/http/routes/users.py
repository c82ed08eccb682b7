"""Open WebUI's user administration under /api/v1/users (admins only)."""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Literal

import anyio.to_thread
from fastapi import APIRouter, Query

from wardgate.errors import NotFoundError
from wardgate.http.deps import AdminUser, FreshAdmin, GatewayDep
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.schemas import TokenBudget, UserList, UserModel, UserUpdateForm
from wardgate.identity.records import KEEP, UserChanges
from wardgate.storage.models import User
from wardgate.storage.paging import MAX_OFFSET

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=ERROR_RESPONSES)


def user_model(row: User) -> UserModel:
    """The API view of an account row."""
    return UserModel(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        active=row.active,
        profile_image_url=row.profile_image_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        last_active_at=row.last_active_at,
        allowed_models=json.loads(row.allowed_models) if row.allowed_models is not None else None,
        token_budget=TokenBudget.of_json(row.token_budget),
        mfa_enabled=bool(row.mfa_enabled),
    )


def _user_id(user_id: str) -> str:
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        raise NotFoundError("User not found.") from None


@router.get("/", response_model=UserList, summary="List accounts")
async def list_users(
    _admin: AdminUser,
    gw: GatewayDep,
    query: str = Query("", max_length=320, description="beginning of the email address or name, any case"),
    role: Literal["pending", "user", "admin"] | None = None,
    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page"),
    page: int = Query(1, ge=1, le=100000, description=f"numbered pages reach {MAX_OFFSET} rows in"),
    limit: int = Query(50, ge=1, le=500),
) -> UserList:
    """A page of accounts, oldest first, optionally filtered; follow `next_cursor` for the next one."""
    fetch = partial(
        gw.directory.users, query=query, role=role, cursor=cursor, offset=(page - 1) * limit, limit=limit
    )
    found = await anyio.to_thread.run_sync(fetch)
    return UserList(
        users=[user_model(r) for r in found.rows], total=found.total, next_cursor=found.next_cursor
    )


@router.get("/{user_id}", response_model=UserModel, summary="One account")
async def get_user(user_id: str, _admin: AdminUser, gw: GatewayDep) -> UserModel:
    """One account by id."""
    row = await anyio.to_thread.run_sync(gw.accounts.get_user, _user_id(user_id))
    return user_model(row)


@router.post("/{user_id}/update", response_model=UserModel, summary="Edit an account")
async def update_user(user_id: str, form: UserUpdateForm, admin: FreshAdmin, gw: GatewayDep) -> UserModel:
    """Change role, name, email, password, enabled state, the models the person may use
    (`allowed_models`, null: inherit) or their token budget (null: none of their own); a password
    change or disabling ends sessions."""
    given = form.model_fields_set
    models, budget = form.allowed_models, form.token_budget
    changes = UserChanges(
        role=form.role,
        name=form.name,
        email=form.email,
        password=form.password,
        active=form.active,
        allowed_models=KEEP if "allowed_models" not in given else None if models is None else tuple(models),
        token_budget=KEEP if "token_budget" not in given else None if budget is None else budget.budget(),
    )
    await anyio.to_thread.run_sync(gw.accounts.update_user, admin.user, _user_id(user_id), changes)
    row = await anyio.to_thread.run_sync(gw.accounts.get_user, _user_id(user_id))
    return user_model(row)


@router.delete("/{user_id}", response_model=bool, summary="Delete an account")
async def delete_user(user_id: str, admin: FreshAdmin, gw: GatewayDep) -> bool:
    """Delete an account and end its sessions; never yourself, never the last admin."""
    await anyio.to_thread.run_sync(gw.accounts.delete_user, admin.user, _user_id(user_id))
    return True


@router.post("/{user_id}/sessions/revoke", response_model=bool, summary="End every session of an account")
async def revoke_sessions(user_id: str, admin: FreshAdmin, gw: GatewayDep) -> bool:
    """Sign the account out everywhere."""
    revoke = partial(gw.accounts.revoke_all_sessions, _user_id(user_id), actor=admin.user.email)
    await anyio.to_thread.run_sync(revoke)
    return True


@router.post("/{user_id}/mfa/reset", response_model=bool, summary="Remove every second factor of an account")
async def reset_mfa(user_id: str, admin: FreshAdmin, gw: GatewayDep) -> bool:
    """For someone who lost every factor and every recovery code: their factors and recovery codes
    are removed and their sessions and API keys end (audited). They sign in with their password and
    enrol again."""
    await anyio.to_thread.run_sync(gw.mfa.reset, admin.user, _user_id(user_id))
    return True
