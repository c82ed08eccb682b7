"""The second-factor forms of the pages: a sign-in's code step (`/auth/mfa`) and the "Second factors"
section of `/account` (authenticator app, recovery codes, removing a passkey, "Confirm it is you").

Passkey ceremonies need script: `static/passkeys.js` runs them against the JSON API (`routes.mfa`).
Everything else here is a plain form. These forms are open to an account that must enrol a second
factor (`enrolling=True`); the rest of the account page's forms stay refused for it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from wardgate.config.values import Role
from wardgate.errors import ApiError
from wardgate.gateway import Gateway
from wardgate.http.cookies import MFA_COOKIE, clear_mfa_cookie, set_token_cookie
from wardgate.http.deps import client_info, gateway, optional_principal
from wardgate.http.forms import form_fields
from wardgate.http.rendering import leave_for, return_target, safe_redirect_path
from wardgate.http.routes.pages import (
    account_view,
    home_for,
    mfa_step,
    page_path,
    to_auth,
)
from wardgate.identity.authentication import Principal
from wardgate.mfa import totp

router = APIRouter(include_in_schema=False)
_SECRET = re.compile(r"[A-Z2-7]{16,128}")  # base32, as `totp.new_secret` makes them
Act = Callable[[Gateway, Principal, dict[str, str]], Awaitable[Response]]


@router.post("/auth/mfa")
async def mfa_code_form(request: Request) -> Response:
    """A sign-in's second step with a TOTP or recovery code: the cookie, as the password form sets it.

    A refused code shows the step again while its pending sign-in lives (five minutes, five tries);
    after that, the password form. The token comes in the form, or in the cookie a single sign-on
    left for this step."""
    form = await form_fields(request)
    gw = gateway(request)
    target = return_target(request, form.get("redirect"), home_for(request))
    token = (form.get("mfa_token") or request.cookies.get(MFA_COOKIE, ""))[:128]
    verify = partial(gw.mfa.verify_code, token, form.get("code", ""), client_info(request))
    try:
        result = await anyio.to_thread.run_sync(verify)
    except ApiError as exc:
        return await mfa_step(request, token, redirect=target, error=exc.detail, status_code=exc.status_code)
    if result.user.role == Role.PENDING:
        target = page_path(request, "/account")
    response: Response = leave_for(request, target)
    set_token_cookie(response, request, result.token)
    if MFA_COOKIE in request.cookies:
        clear_mfa_cookie(response, request)
    return response


async def _account_form(request: Request, act: Act, **on_error: Any) -> Response:
    """Run one of the section's forms; a refusal is shown on the account page (with "Confirm it is
    you" when the change needs a step-up), never carried in an address."""
    form = await form_fields(request)
    principal = await optional_principal(request, enrolling=True)
    if principal is None:
        return to_auth(request, "/account")  # a form post is not a page to come back to
    gw = gateway(request)
    try:
        return await act(gw, principal, form)
    except ApiError as exc:
        shown: dict[str, Any] = {"step_up": exc.code == "step_up_required"}
        shown |= {key: value(gw, principal, form) for key, value in on_error.items()}
        return await account_view(request, principal, error=exc.detail, status_code=exc.status_code, **shown)


def _back(request: Request, notice: str) -> RedirectResponse:
    return RedirectResponse(page_path(request, f"/account?notice={notice}#mfa"), status_code=303)


def totp_panel(secret: str, account: str, issuer: str) -> dict[str, str]:
    """The set-up panel: the QR code (inline SVG, made here: trusted markup) and the secret as text."""
    uri = totp.provisioning_uri(secret, account, issuer)
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return {"secret": secret, "grouped": grouped, "qr": totp.qr_svg(uri)}


def _posted_panel(gw: Gateway, principal: Principal, form: dict[str, str]) -> dict[str, str] | None:
    """The set-up panel again after a refused first code, from the secret the confirm form carries
    (the person's own, already on their screen); None for anything that is not a secret's shape."""
    secret = form.get("secret", "")
    if not _SECRET.fullmatch(secret):
        return None
    return totp_panel(secret, principal.user.email, gw.mfa.policy.issuer)


@router.post("/account/mfa/totp/setup")
async def totp_setup_form(request: Request) -> Response:
    """Begin setting up an authenticator app: the QR code, the secret and the confirm form."""

    async def act(gw: Gateway, principal: Principal, _form: dict[str, str]) -> Response:
        setup = await anyio.to_thread.run_sync(gw.mfa.setup_totp, principal.user, principal.claims)
        panel = totp_panel(setup.secret, principal.user.email, gw.mfa.policy.issuer)
        return await account_view(request, principal, totp_setup=panel)

    return await _account_form(request, act)


@router.post("/account/mfa/totp/enable")
async def totp_enable_form(request: Request) -> Response:
    """Confirm the app with its first code; the ten recovery codes are shown this once."""

    async def act(gw: Gateway, principal: Principal, form: dict[str, str]) -> Response:
        enable = partial(gw.mfa.enable_totp, principal.user, principal.claims, form.get("code", ""))
        codes = await anyio.to_thread.run_sync(enable)
        notice = "The authenticator app is on: sign-ins now ask for a code from it."
        return await account_view(request, principal, notice=notice, recovery_codes=codes)

    return await _account_form(request, act, totp_setup=_posted_panel)


@router.post("/account/mfa/totp/disable")
async def totp_disable_form(request: Request) -> Response:
    """Turn the app off: with a current code, or after "Confirm it is you" in the last minutes."""

    async def act(gw: Gateway, principal: Principal, form: dict[str, str]) -> Response:
        code = form.get("code", "").strip() or None
        await anyio.to_thread.run_sync(gw.mfa.disable_totp, principal.user, principal.claims, code)
        return _back(request, "totp-off")

    return await _account_form(request, act)


@router.post("/account/mfa/recovery-codes")
async def recovery_codes_form(request: Request) -> Response:
    """A new set of recovery codes, shown this once; the old set stops working."""

    async def act(gw: Gateway, principal: Principal, _form: dict[str, str]) -> Response:
        regenerate = partial(gw.mfa.regenerate_recovery_codes, principal.user, principal.claims)
        codes = await anyio.to_thread.run_sync(regenerate)
        notice = "New recovery codes are made; the old ones no longer work."
        return await account_view(request, principal, notice=notice, recovery_codes=codes)

    return await _account_form(request, act)


@router.post("/account/mfa/passkeys/{passkey_id}/remove")
async def passkey_remove_form(request: Request, passkey_id: str = Path(max_length=36)) -> Response:
    """Remove one of the person's passkeys."""

    async def act(gw: Gateway, principal: Principal, _form: dict[str, str]) -> Response:
        remove = partial(gw.mfa.remove_passkey, principal.user, principal.claims, passkey_id)
        await anyio.to_thread.run_sync(remove)
        return _back(request, "passkey-removed")

    return await _account_form(request, act)


@router.post("/account/mfa/step-up")
async def step_up_form(request: Request) -> Response:
    """ "Confirm it is you" with a code; then back to the page that asked, to repeat the change."""
    default = page_path(request, "/account?notice=stepped-up#mfa")

    async def act(gw: Gateway, principal: Principal, form: dict[str, str]) -> Response:
        step_up = partial(gw.mfa.step_up, principal.user, principal.claims, form.get("code", ""))
        await anyio.to_thread.run_sync(step_up)
        return RedirectResponse(safe_redirect_path(form.get("redirect"), default), status_code=303)

    def again(_gw: Gateway, _principal: Principal, form: dict[str, str]) -> str:
        return safe_redirect_path(form.get("redirect"), default)

    return await _account_form(request, act, step_up=lambda *_: True, step_up_return=again)
