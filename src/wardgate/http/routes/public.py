"""Public endpoints: /api/config (flags for the sign-in page) and /health."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from wardgate import __version__
from wardgate.http.deps import GatewayDep, SiteDep
from wardgate.http.schemas import Health

router = APIRouter(tags=["public"])


@router.get("/api/config", summary="Public configuration flags (Open WebUI's shape)")
async def public_config(gw: GatewayDep, site: SiteDep) -> dict[str, object]:
    """Name, version and what the sign-in page should offer; `onboarding` while no account exists."""
    has_users = await anyio.to_thread.run_sync(gw.accounts.has_users)
    config: dict[str, object] = {
        "status": True,
        "name": site.name,
        "version": __version__,
        "default_locale": "en-US",
        "oauth": {"providers": dict(site.sign_on_providers)},
        "features": {
            "auth": True,
            "auth_trusted_header": False,
            "enable_ldap": gw.ldap is not None,
            "enable_api_key": site.api_keys_enabled,
            "enable_signup": site.signup_open,
            "enable_login_form": site.login_form,
            "enable_password_auth": site.password_auth,
        },
    }
    if not has_users:
        config["onboarding"] = True
    return config


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready: a store is unavailable"}},
    summary="Liveness, or readiness with ?ready=true",
)
async def health(gw: GatewayDep, ready: bool = Query(False)) -> Health | JSONResponse:
    """Liveness by default; `?ready=true` also checks the stores and answers 503 when one is down."""
    if not ready:
        return Health(status=True)
    db_ok = await anyio.to_thread.run_sync(gw.database_ready)
    channel = gw.sync.channel_state
    body = Health(
        status=db_ok,
        database="ok" if db_ok else "unavailable",
        sessions="stale" if gw.registry.is_stale else "synchronised",
        rate_limits=await anyio.to_thread.run_sync(gw.limiter.probe),
        revocation_channel=channel,
    )
    if not db_ok:
        return JSONResponse(body.model_dump(), status_code=503)
    return body
