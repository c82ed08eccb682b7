"""Second factors under /api/v1/auths/mfa: the sign-in step, enrolment, step-up and passkeys.

The route names of the sign-in step and of TOTP enrolment are fixed (other tools call them):
`POST /mfa/verify`, `/mfa/totp/setup`, `/mfa/totp/enable`, `/mfa/totp/disable`, `GET /mfa`.
Passkey ceremonies are two calls each, `…/begin` (options for the browser's WebAuthn call and a
sealed ceremony token) and `…/finish` (the browser's answer and that token).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Path, Request, Response

from wardgate.http.deps import ClientDep, EnrollingUser, GatewayDep
from wardgate.http.errors import ERROR_RESPONSES
from wardgate.http.routes.auth import signed_in
from wardgate.http.schemas import (
    CeremonyStart,
    CodeForm,
    EmptyForm,
    MfaCodeForm,
    MfaStatus,
    OptionalCodeForm,
    PasskeyAddedResult,
    PasskeyAssertion,
    PasskeyOut,
    PasskeyRegistration,
    PasskeySigninBegin,
    RecoveryCodes,
    SessionUser,
    StepUpResult,
    TotpSetupResult,
)
from wardgate.mfa.factors import PasskeyInfo

router = APIRouter(prefix="/api/v1/auths/mfa", tags=["second factors"], responses=ERROR_RESPONSES)


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _passkey(p: PasskeyInfo) -> PasskeyOut:
    return PasskeyOut(id=p.id, name=p.name, created_at=p.created_at, last_used_at=p.last_used_at)


def _ceremony(started: tuple[str, dict[str, Any]], response: Response) -> CeremonyStart:
    _no_store(response)
    return CeremonyStart(ceremony=started[0], options=started[1])


# --- the sign-in step (no session yet: the mfa_token or the ceremony is the credential) -----------


@router.post("/verify", response_model=SessionUser, summary="Finish a sign-in with a TOTP or recovery code")
async def verify(
    form: MfaCodeForm, request: Request, response: Response, gw: GatewayDep, client: ClientDep
) -> SessionUser:
    """The second step of `POST /signin`: the usual session response and cookie."""
    result = await anyio.to_thread.run_sync(gw.mfa.verify_code, form.mfa_token, form.code, client)
    return signed_in(result, request, response)


@router.post("/passkeys/signin/begin", response_model=CeremonyStart, summary="Begin a passkey sign-in")
async def passkey_signin_begin(form: PasskeySigninBegin, response: Response, gw: GatewayDep) -> CeremonyStart:
    """Without `mfa_token`: sign in with any passkey of this site, no email typed. With it: the
    pending sign-in's second step, with that account's passkeys."""
    started = await anyio.to_thread.run_sync(gw.mfa.begin_passkey_signin, form.mfa_token)
    return _ceremony(started, response)


@router.post("/passkeys/signin/finish", response_model=SessionUser, summary="Finish a passkey sign-in")
async def passkey_signin_finish(
    form: PasskeyAssertion, request: Request, response: Response, gw: GatewayDep, client: ClientDep
) -> SessionUser:
    """The browser's answer: the usual session response and cookie."""
    finish = partial(gw.mfa.finish_passkey_signin, form.ceremony, form.credential, client)
    return signed_in(await anyio.to_thread.run_sync(finish), request, response)


# --- the account's own factors (a signed-in person; open to an account that must enrol) -----------


@router.get("", response_model=MfaStatus, summary="Your second factors (never a secret)")
async def status(principal: EnrollingUser, response: Response, gw: GatewayDep) -> MfaStatus:
    """Which factors the account has, whether its role requires one, and this session's step-up."""
    factors = await anyio.to_thread.run_sync(gw.mfa.factors_of, principal.user.id)
    until = await anyio.to_thread.run_sync(gw.mfa.recent_until, principal.claims)
    _no_store(response)
    return MfaStatus(
        methods=list(factors.methods),
        totp=factors.totp,
        passkeys=[_passkey(p) for p in factors.passkeys],
        recovery_codes_left=factors.recovery_codes_left,
        required=principal.user.role in gw.mfa.policy.required_roles,
        step_up_until=until,
        passkeys_available=gw.mfa.policy.relying_party is not None,
    )


@router.post("/totp/setup", response_model=TotpSetupResult, summary="Begin setting up an authenticator app")
async def totp_setup(
    principal: EnrollingUser, response: Response, gw: GatewayDep, _form: EmptyForm | None = None
) -> TotpSetupResult:
    """A new secret (as text and as an `otpauth://` address); in force once confirmed by `enable`."""
    setup = await anyio.to_thread.run_sync(gw.mfa.setup_totp, principal.user, principal.claims)
    _no_store(response)
    return TotpSetupResult(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post("/totp/enable", response_model=RecoveryCodes, summary="Confirm the app with its first code")
async def totp_enable(
    form: CodeForm, principal: EnrollingUser, response: Response, gw: GatewayDep
) -> RecoveryCodes:
    """Turn the app on; the answer holds the account's ten recovery codes, shown this once."""
    enable = partial(gw.mfa.enable_totp, principal.user, principal.claims, form.code)
    codes = await anyio.to_thread.run_sync(enable)
    _no_store(response)
    return RecoveryCodes(recovery_codes=codes)


@router.post("/totp/disable", response_model=bool, summary="Turn the authenticator app off")
async def totp_disable(form: OptionalCodeForm, principal: EnrollingUser, gw: GatewayDep) -> bool:
    """Needs a current code, or a second factor shown in this session within MFA_STEP_UP_MAX_AGE."""
    disable = partial(gw.mfa.disable_totp, principal.user, principal.claims, form.code)
    await anyio.to_thread.run_sync(disable)
    return True


@router.post("/recovery-codes", response_model=RecoveryCodes, summary="New recovery codes")
async def recovery_codes(
    principal: EnrollingUser, response: Response, gw: GatewayDep, _form: EmptyForm | None = None
) -> RecoveryCodes:
    """A new set of ten (the old set stops working); needs a recent second factor."""
    regenerate = partial(gw.mfa.regenerate_recovery_codes, principal.user, principal.claims)
    codes = await anyio.to_thread.run_sync(regenerate)
    _no_store(response)
    return RecoveryCodes(recovery_codes=codes)


@router.post("/step-up", response_model=StepUpResult, summary="Confirm it is you with a code")
async def step_up(form: CodeForm, principal: EnrollingUser, gw: GatewayDep) -> StepUpResult:
    """Show a second factor in this session, for the sensitive changes that need a recent one."""
    until = await anyio.to_thread.run_sync(gw.mfa.step_up, principal.user, principal.claims, form.code)
    return StepUpResult(step_up_until=until)


@router.post("/passkeys/register/begin", response_model=CeremonyStart, summary="Begin adding a passkey")
async def passkey_register_begin(
    principal: EnrollingUser, response: Response, gw: GatewayDep, _form: EmptyForm | None = None
) -> CeremonyStart:
    """Options for `navigator.credentials.create()` (a discoverable credential, user verification)."""
    begin = partial(gw.mfa.begin_passkey_registration, principal.user, principal.claims)
    return _ceremony(await anyio.to_thread.run_sync(begin), response)


@router.post("/passkeys/register/finish", response_model=PasskeyAddedResult, summary="Add the passkey")
async def passkey_register_finish(
    form: PasskeyRegistration, principal: EnrollingUser, response: Response, gw: GatewayDep
) -> PasskeyAddedResult:
    """Store the verified passkey; recovery codes when it is the account's first factor."""
    finish = partial(
        gw.mfa.finish_passkey_registration,
        principal.user,
        principal.claims,
        form.ceremony,
        form.name.strip() or "Passkey",
        form.credential,
    )
    added = await anyio.to_thread.run_sync(finish)
    _no_store(response)
    return PasskeyAddedResult(passkey=_passkey(added.passkey), recovery_codes=added.recovery_codes)


@router.delete("/passkeys/{passkey_id}", response_model=bool, summary="Remove a passkey")
async def passkey_remove(
    principal: EnrollingUser, gw: GatewayDep, passkey_id: str = Path(max_length=36)
) -> bool:
    """Remove one of the account's passkeys (needs a recent second factor)."""
    remove = partial(gw.mfa.remove_passkey, principal.user, principal.claims, passkey_id)
    await anyio.to_thread.run_sync(remove)
    return True


@router.post("/passkeys/step-up/begin", response_model=CeremonyStart, summary="Confirm it is you: begin")
async def passkey_step_up_begin(
    principal: EnrollingUser, response: Response, gw: GatewayDep, _form: EmptyForm | None = None
) -> CeremonyStart:
    """A passkey ceremony for a step-up in this session."""
    begin = partial(gw.mfa.begin_passkey_step_up, principal.user, principal.claims)
    return _ceremony(await anyio.to_thread.run_sync(begin), response)


@router.post("/passkeys/step-up/finish", response_model=StepUpResult, summary="Confirm it is you: finish")
async def passkey_step_up_finish(
    form: PasskeyAssertion, principal: EnrollingUser, gw: GatewayDep
) -> StepUpResult:
    """The browser's answer; until when this session's second factor counts as recent."""
    finish = partial(
        gw.mfa.finish_passkey_step_up, principal.user, principal.claims, form.ceremony, form.credential
    )
    return StepUpResult(step_up_until=await anyio.to_thread.run_sync(finish))
