"""API keys over HTTP: Open WebUI's one-key routes, wardgate's named keys, and the admin's view.

Every route here needs a signed-in session (`authenticate` refuses API keys), so a stolen key can
neither create more keys nor hide its own revocation. A key is in a response exactly once: the one
that creates it (`Cache-Control: no-store`). Open WebUI's `GET /api/v1/auths/api_key` returned the
stored key; wardgate stores only a digest, so that route answers 404 and points to the list.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from wardgate.errors import BadRequestError, NotFoundError
from wardgate.http.deps import AdminUser, CurrentUser, FreshAdmin, FreshVerifiedUser, GatewayDep
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.schemas import TokenBudget
from wardgate.identity.api_keys import CreatedKey
from wardgate.identity.key_material import DEFAULT_NAME, NewKey
from wardgate.storage.models import ApiKey

SHOWN_ONCE = (
    "wardgate keeps only a hash of each API key, so a key cannot be shown again. "
    "Create a new one, or list your keys' details at /api/v1/auths/api_keys."
)


async def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


router = APIRouter(tags=["api keys"], responses=ERROR_RESPONSES, dependencies=[Depends(_no_store)])
_KeyId = Path(max_length=64)


class ApiKeyForm(BaseModel):
    """POST /api/v1/auths/api_keys: a named key, optionally expiring and scoped. A field this
    version does not know is refused: a narrowing it would ignore must not yield a wider key."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(DEFAULT_NAME, max_length=64)
    expires_in_days: int | None = Field(None, ge=1, le=3650, description="Lifetime in days.")
    expires_at: int | None = Field(None, description="Expiry as Unix time; or use expires_in_days.")
    upstreams: list[Literal["ollama", "openai", "app", "forward-auth"]] | None = Field(
        None,
        max_length=4,
        description="Only these upstreams (forward-auth: sites FORWARD_AUTH_FILE guards); absent: any.",
    )
    paths: list[str] | None = Field(
        None, max_length=32, description="Only paths under these prefixes (segment boundary); absent: any."
    )
    rate_limit: str | None = Field(
        None, max_length=32, description="The key's own limit such as 60/1m, on top of API_KEY_RATE_LIMIT."
    )
    models: list[str] | None = Field(
        None, max_length=256, description="Only models matching these names or globs (llama3*); absent: any."
    )
    token_budget: TokenBudget | None = Field(None, description="The key's own token budget per period.")
    acts_for_users: bool = Field(
        False,
        description="A service key (admins only) for Open WebUI's server: each call acts for the person "
        "its forwarded user headers name, with that person's model rules, budget and usage; model "
        "servers only.",
    )


class ApiKeyInfo(BaseModel):
    """A key's details: never the key, never its hash."""

    id: str
    user_id: str
    name: str
    prefix: str
    created_at: int
    expires_at: int | None
    last_used_at: int | None
    upstreams: list[str] | None
    paths: list[str] | None
    rate_limit: str | None
    models: list[str] | None = None
    token_budget: TokenBudget | None = None
    acts_for_users: bool = False


class NewApiKey(ApiKeyInfo):
    """A created key: the details and, this once, the key itself."""

    api_key: str


class OpenWebUIApiKey(BaseModel):
    """Open WebUI's `{"api_key": "sk-..."}`."""

    api_key: str


class ApiKeyPage(BaseModel):
    """GET /api/v1/api_keys."""

    keys: list[ApiKeyInfo]
    total: int


def key_info(row: ApiKey) -> ApiKeyInfo:
    """The API view of a key row."""
    return ApiKeyInfo(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        upstreams=row.upstreams.split("\n") if row.upstreams else None,
        paths=row.paths.split("\n") if row.paths else None,
        rate_limit=row.rate_limit,
        models=row.models.split("\n") if row.models else None,
        token_budget=TokenBudget.of_json(row.token_budget),
        acts_for_users=bool(row.acts_for_users),
    )


def _new_key(form: ApiKeyForm) -> NewKey:
    if form.expires_in_days is not None and form.expires_at is not None:
        raise BadRequestError("Give expires_in_days or expires_at, not both.", code="invalid_expiry")
    expires_at = form.expires_at
    if form.expires_in_days is not None:
        expires_at = int(time.time()) + form.expires_in_days * 86400
    return NewKey(
        name=form.name,
        expires_at=expires_at,
        upstreams=tuple(form.upstreams) if form.upstreams is not None else None,
        paths=tuple(form.paths) if form.paths is not None else None,
        rate_limit=form.rate_limit,
        models=tuple(form.models) if form.models is not None else None,
        token_budget=form.token_budget.budget() if form.token_budget is not None else None,
    )


# --- Open WebUI's routes: one key per user, named "default" --------------------------------------


@router.post("/api/v1/auths/api_key", response_model=OpenWebUIApiKey, summary="Create your API key")
async def create_default_key(principal: FreshVerifiedUser, gw: GatewayDep) -> OpenWebUIApiKey:
    """Create a key named "default", replacing the previous one; the key is shown only now."""
    create = partial(gw.api_keys.create, principal.user, NewKey(), replace=True)
    created: CreatedKey = await anyio.to_thread.run_sync(create)
    return OpenWebUIApiKey(api_key=created.key)


@router.get("/api/v1/auths/api_key", response_model=OpenWebUIApiKey, summary="Not available: shown once")
async def get_default_key(_principal: CurrentUser) -> OpenWebUIApiKey:
    """Always 404: keys are stored as hashes and shown only when created."""
    raise NotFoundError(SHOWN_ONCE, code="api_key_not_retrievable")


@router.delete("/api/v1/auths/api_key", response_model=bool, summary="Revoke your API key")
async def delete_default_key(principal: CurrentUser, gw: GatewayDep) -> bool:
    """Revoke the key named "default" (true also when there was none)."""
    await anyio.to_thread.run_sync(gw.api_keys.revoke_named, principal.user, DEFAULT_NAME)
    return True


# --- wardgate's routes: several named keys -------------------------------------------------------


@router.get("/api/v1/auths/api_keys", response_model=list[ApiKeyInfo], summary="Your API keys")
async def list_own_keys(principal: CurrentUser, gw: GatewayDep) -> list[ApiKeyInfo]:
    """Details of every key of yours, newest first."""
    rows = await anyio.to_thread.run_sync(gw.api_keys.list_keys, principal.user.id)
    return [key_info(row) for row in rows]


@router.post("/api/v1/auths/api_keys", response_model=NewApiKey, summary="Create a named API key")
async def create_key(form: ApiKeyForm, principal: FreshVerifiedUser, gw: GatewayDep) -> NewApiKey:
    """Create a key; the response is the only time the key itself is shown."""
    create = partial(gw.api_keys.create, principal.user, _new_key(form), acts_for_users=form.acts_for_users)
    created: CreatedKey = await anyio.to_thread.run_sync(create)
    return NewApiKey(**key_info(created.row).model_dump(), api_key=created.key)


@router.delete("/api/v1/auths/api_keys/{key_id}", response_model=bool, summary="Revoke one of your keys")
async def revoke_own_key(principal: CurrentUser, gw: GatewayDep, key_id: str = _KeyId) -> bool:
    """Revoke a key of yours at once, on every instance (404 for anyone else's)."""
    await anyio.to_thread.run_sync(gw.api_keys.revoke, principal.user, principal.user.id, key_id)
    return True


# --- administration ------------------------------------------------------------------------------


@router.get("/api/v1/api_keys", response_model=ApiKeyPage, summary="Every account's API keys (admin)")
async def list_all_keys(
    _admin: AdminUser,
    gw: GatewayDep,
    page: int = Query(1, ge=1, le=100000),
    limit: int = Query(50, ge=1, le=500),
) -> ApiKeyPage:
    """A page of all keys, newest first."""
    fetch = partial(gw.api_keys.list_all, offset=(page - 1) * limit, limit=limit)
    rows, total = await anyio.to_thread.run_sync(fetch)
    return ApiKeyPage(keys=[key_info(row) for row in rows], total=total)


@router.get(
    "/api/v1/users/{user_id}/api_keys", response_model=list[ApiKeyInfo], summary="An account's API keys"
)
async def list_user_keys(user_id: str, _admin: AdminUser, gw: GatewayDep) -> list[ApiKeyInfo]:
    """Details of one account's keys (admin)."""
    await anyio.to_thread.run_sync(gw.accounts.get_user, user_id)  # 404 for an unknown account
    rows = await anyio.to_thread.run_sync(gw.api_keys.list_keys, user_id)
    return [key_info(row) for row in rows]


@router.delete(
    "/api/v1/users/{user_id}/api_keys/{key_id}", response_model=bool, summary="Revoke an account's key"
)
async def revoke_user_key(user_id: str, admin: FreshAdmin, gw: GatewayDep, key_id: str = _KeyId) -> bool:
    """Revoke any account's key (admin); 404 when the key is not that account's."""
    await anyio.to_thread.run_sync(gw.api_keys.revoke, admin.user, user_id, key_id)
    return True
