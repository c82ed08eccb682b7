"""The pages people see: sign-in (/auth) and their account (/account).

Forms post to same-origin handlers (no inline script; the strict CSP holds) and every state change
passes the CSRF middleware's Origin check like the JSON API does. The pages around these render
through the helpers here: the second-factor forms (`mfa_pages`: `account_view`, `mfa_step`) and
administration (`admin_pages`: the sign-in redirect, the notices, the page cursors).

Past the ~300-line guidance: sign-in and the account page share the sign-in redirect rules and the
"refusal shown on the page it came from" pattern, and the pages around them render through these
helpers; the account's forms would be the next part to move out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response

from wardgate.config.values import Role
from wardgate.errors import ApiError, BadRequestError
from wardgate.gateway import Gateway
from wardgate.http.cookies import MFA_COOKIE, clear_mfa_cookie, clear_token_cookie, set_token_cookie
from wardgate.http.deps import client_info, gateway, optional_principal, site
from wardgate.http.forms import form_fields
from wardgate.http.rendering import leave_for, render, return_target
from wardgate.http.routes.oauth import signout_redirect_url, start_link
from wardgate.http.routes.password_reset import resets_of
from wardgate.http.routes.usage_pages import account_usage
from wardgate.identity.authentication import TOKEN_COOKIE, Principal
from wardgate.identity.records import MfaRequired, SignedIn
from wardgate.oauth.refusals import refusal_message
from wardgate.storage.paging import Cursor

router = APIRouter(include_in_schema=False)
PAGE_ROWS = 50  # users, pending people and events on /admin; sessions on /account


def page_cursor(text: str | None) -> str | None:
    """A page's cursor from the address; one that is not (edited, cut short) shows the first page."""
    if text is None:
        return None
    try:
        Cursor.decode(text)
    except BadRequestError:
        return None
    return text


NOTICES = {
    "password": "Password changed. Please sign in again with the new password.",
    "password-reset": (
        "Your new password is set and every session of your account has ended. Sign in with the new password."
    ),
    "signed-out": "You are signed out.",
    "signed-out-everywhere": "You are signed out everywhere, this browser included.",
    "session": "That session is signed out.",
    "session-ended": (
        "Your session has ended, so please sign in again. If you were filling in a form, it was "
        "not sent: you will be taken back to its page to do it again."
    ),
    "signin-needed": "Sign in to see that page.",
    "linked": "The sign-in provider is linked: you can sign in with it from now on.",
    "linked-signed-out": (
        "The sign-in provider is linked: you can sign in with it from now on. Every other session and "
        "API key of this account has ended."
    ),
    "mfa-required": (
        "Your role requires a second factor. Set up an authenticator app or a passkey below: until "
        "then your account can do nothing else."
    ),
    "stepped-up": "Confirmed. You can make the change now.",
    "totp-off": "The authenticator app is turned off.",
    "passkey-added": "The passkey is added.",
    "passkey-removed": "The passkey is removed.",
    "mfa-reset": (
        "Second factors reset: that account signs in with its password alone now, and its sessions "
        "have ended."
    ),
}


def page_path(request: Request, path: str) -> str:
    """A path of wardgate's own pages (they live under WARDGATE_PATH_PREFIX)."""
    return site(request).at(path)


def to_auth(request: Request, page: str | None = None) -> RedirectResponse:
    """To the sign-in page, saying why, and coming back afterwards to `page` (a path under the
    prefix): for a page visit its own address by default, for a form the page the form is on —
    never the form's address, which only takes a POST (after signing in, the browser would GET it).
    """
    if page is not None:
        target = page_path(request, page)
    elif request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    else:
        target = home_for(request)
    # A cookie that no longer signs in is a session that ended (expired, signed out elsewhere).
    ended = bool(request.cookies.get(TOKEN_COOKIE)) or request.method not in ("GET", "HEAD")
    reason = "&notice=session-ended" if ended else ""
    response = RedirectResponse(
        page_path(request, f"/auth?redirect={quoted_path(target)}{reason}"), status_code=303
    )
    if request.cookies.get(TOKEN_COOKIE):
        clear_token_cookie(response, request)
    return response


def quoted_path(text: str) -> str:
    """A path as the value of a `redirect=` parameter."""
    return quote(text, safe="/")


def home_for(request: Request) -> str:
    """Where a signed-in person goes by default: the protected app if there is one, else the account."""
    return "/" if site(request).has_app else page_path(request, "/account")


@router.get("/")
async def home(request: Request) -> Response:
    """Signed-out visitors go to /auth, signed-in ones to their account (or the protected app).

    With an app upstream and no WARDGATE_PATH_PREFIX, "/" is the app's: `UpstreamDispatch` sends it there.
    """
    principal = await optional_principal(request)
    return RedirectResponse(home_for(request) if principal else page_path(request, "/auth"), status_code=303)


@router.get("/auth")
async def auth_page(
    request: Request, redirect: str = "", mode: str = "signin", error: str = "", notice: str = ""
) -> Response:
    """Sign in, sign up when enabled, or create the first admin on a fresh install.

    `error` is a refusal code (single sign-on sends people back here with one): its fixed message is
    shown, never text from the address. A single sign-on that still needs the account's own second
    factor comes back here with the pending sign-in in a cookie: the page shows that step.
    """
    principal = await optional_principal(request)
    if principal is not None and not error:
        return RedirectResponse(return_target(request, redirect, home_for(request)), status_code=303)
    pending = request.cookies.get(MFA_COOKIE)
    if pending and not error:
        return await mfa_step(request, pending, redirect=redirect)
    message = refusal_message(error[:64]) if error else None
    return await _auth_form(request, redirect=redirect, mode=mode, error=message, notice=NOTICES.get(notice))


async def _auth_form(request: Request, *, status_code: int = 200, **context: Any) -> Response:
    """The sign-in page: its forms, or a sign-in's second step (`mode="mfa"` with an `mfa_token`)."""
    where = site(request)
    gw = gateway(request)
    onboarding = not await anyio.to_thread.run_sync(gw.accounts.has_users)
    wanted = context.pop("mode", "signin")
    mode = "signin"
    if wanted == "signup" and where.signup_open:
        mode = "signup"
    elif wanted == "mfa" and context.get("mfa_token"):
        mode = "mfa"
    values = {
        "email": "",
        "name": "",
        "redirect": return_target(request, context.pop("redirect", ""), home_for(request)),
        "providers": dict(where.sign_on_providers),
        "onboarding": onboarding,
        "mode": mode,
        "signup_enabled": where.signup_open,
        "password_auth": where.password_auth,
        "min_length": where.password_min_length,
        "passkeys": gw.mfa.policy.relying_party is not None,
        "ldap_label": gw.ldap.directory.config.label if gw.ldap is not None else None,
        "ldap_user": "",
        "mfa_token": "",
        "methods": (),
        "forgot": resets_of(request) is not None,
        "needs_approval": gw.accounts.policy.default_role == Role.PENDING,
        "field_errors": {},
        **context,
    }
    return render(request, "auth.html", status_code=status_code, **values)


async def mfa_step(
    request: Request, token: str, *, redirect: str, error: str | None = None, status_code: int = 200
) -> Response:
    """A sign-in's second step for the pending sign-in `token`; once that has ended (used, expired,
    too many wrong codes), the sign-in form saying so."""
    try:
        methods = await anyio.to_thread.run_sync(gateway(request).mfa.pending_methods, token)
    except ApiError as exc:
        response = await _auth_form(request, status_code=exc.status_code, redirect=redirect, error=exc.detail)
        clear_mfa_cookie(response, request)
        return response
    return await _auth_form(
        request,
        status_code=status_code,
        redirect=redirect,
        error=error,
        mode="mfa",
        mfa_token=token,
        methods=methods,
    )


@router.post("/auth/signin")
async def signin_form(request: Request) -> Response:
    """The sign-in form: on success set the cookie and go to the requested page."""
    form = await form_fields(request)
    gw = gateway(request)
    signin = partial(
        gw.accounts.signin, form.get("email", ""), form.get("password", ""), client_info(request)
    )
    return await _password_form(request, form, signin, email=form.get("email", "")[:320])


@router.post("/auth/ldap")
async def ldap_form(request: Request) -> Response:
    """The directory form (ENABLE_LDAP): as the sign-in form, with the directory's user name."""
    form = await form_fields(request)
    ldap = gateway(request).ldap
    if ldap is None:
        return await _auth_form(
            request, status_code=404, error="Directory sign-in is not enabled on this site."
        )
    signin = partial(ldap.signin, form.get("user", ""), form.get("password", ""), client_info(request))
    return await _password_form(request, form, signin, ldap_user=form.get("user", "")[:256])


async def _password_form(
    request: Request,
    form: dict[str, str],
    signin: Callable[[], SignedIn | MfaRequired],
    **kept: str,
) -> Response:
    """A password sign-in (wardgate's own, or the directory's): the cookie and the way on, the
    second step, or the form again with the refusal (and what was typed, never the password)."""
    target = return_target(request, form.get("redirect"), home_for(request))
    if not site(request).password_auth:
        return await _auth_form(
            request, status_code=403, redirect=target, error="Password sign-in is disabled on this site."
        )
    try:
        result = await anyio.to_thread.run_sync(signin)
    except ApiError as exc:
        return await _auth_form(
            request, status_code=exc.status_code, redirect=target, error=exc.detail, **kept
        )
    if isinstance(result, MfaRequired):  # the password passed; the second step is next, same page
        return await _auth_form(
            request, redirect=target, mode="mfa", mfa_token=result.token, methods=result.methods
        )
    if result.user.role == Role.PENDING:
        target = page_path(request, "/account")
    response = leave_for(request, target)
    set_token_cookie(response, request, result.token)
    return response


_SIGNUP_FIELDS = {"email_taken": "email", "invalid_email": "email", "invalid_name": "name"}


@router.post("/auth/signup")
async def signup_form(request: Request) -> Response:
    """The sign-up (and first-admin) form."""
    form = await form_fields(request)
    gw = gateway(request)
    target = return_target(request, form.get("redirect"), home_for(request))
    again = form.get("confirm_password")
    if again is not None and again != form.get("password", ""):
        return await _auth_form(
            request,
            status_code=400,
            redirect=target,
            mode="signup",
            field_errors={"confirm": "The two passwords are not the same."},
            email=form.get("email", "")[:320],
            name=form.get("name", "")[:255],
        )
    try:
        result = await anyio.to_thread.run_sync(
            gw.accounts.signup,
            form.get("name", ""),
            form.get("email", ""),
            form.get("password", ""),
            client_info(request),
        )
    except ApiError as exc:
        field = _SIGNUP_FIELDS.get(exc.code, "password" if exc.code.startswith("password") else None)
        return await _auth_form(
            request,
            status_code=exc.status_code,
            redirect=target,
            mode="signup",
            error=None if field else exc.detail,
            field_errors={field: exc.detail} if field else {},
            email=form.get("email", "")[:320],
            name=form.get("name", "")[:255],
        )
    response = leave_for(
        request, page_path(request, "/account") if result.user.role == Role.PENDING else target
    )
    set_token_cookie(response, request, result.token)
    return response


@router.get("/auth/continue")
async def continue_page(request: Request, to: str = "") -> Response:
    """After a sign-in form, on to the protected app it came from (FORWARD_AUTH_FILE): a page that
    moves on by itself, since a form's redirect may not leave this origin under the CSP."""
    target = return_target(request, to, home_for(request))
    if target.startswith("/"):
        return RedirectResponse(target, status_code=303)
    return render(request, "continue.html", target=target, principal=await optional_principal(request))


@router.post("/auth/signout")
async def signout_form(request: Request) -> Response:
    """Sign out this browser: the session is revoked, the cookie cleared, and for an SSO session the
    provider's session is ended too (a page, not a redirect: CSP form-action covers redirects)."""
    gw = gateway(request)
    principal = await optional_principal(request, enrolling=True)  # one who must enrol may leave
    provider_url = None
    if principal is not None:
        provider_url = await signout_redirect_url(request, gw, principal.claims)
        await anyio.to_thread.run_sync(gw.accounts.signout, principal.claims)
    response: Response
    if provider_url:
        response = render(request, "signed_out.html", provider_url=provider_url)
    else:
        response = RedirectResponse(page_path(request, "/auth?notice=signed-out"), status_code=303)
    clear_token_cookie(response, request)
    if MFA_COOKIE in request.cookies:  # a second step a single sign-on left and a passkey finished
        clear_mfa_cookie(response, request)
    return response


@router.get("/account")
async def account_page(
    request: Request, notice: str = "", sessions: str | None = None, confirm: str | None = None
) -> Response:
    """Profile, second factors, password change and the person's own sessions (`sessions`: a page's
    cursor; `confirm`: show the "Confirm it is you" form, where a passkey ceremony asked for it).

    Open to an account that must enrol a second factor first; its other forms stay refused."""
    principal = await optional_principal(request, enrolling=True)
    if principal is None:
        return to_auth(request)
    return await account_view(
        request, principal, notice=NOTICES.get(notice), cursor=sessions, step_up=confirm is not None
    )


async def account_view(
    request: Request,
    principal: Principal,
    *,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
    cursor: str | None = None,
    **second: Any,
) -> Response:
    """The account page; `second`: what the second-factor section shows this time (`step_up`,
    `step_up_return`, `totp_setup`, `recovery_codes`)."""
    gw = gateway(request)
    fetch = partial(gw.directory.sessions_of, principal.user.id, cursor=page_cursor(cursor), limit=PAGE_ROWS)
    sessions = await anyio.to_thread.run_sync(fetch)
    row = await anyio.to_thread.run_sync(gw.accounts.get_user, principal.user.id)
    rows = [_session_view(s, principal) for s in sessions.rows]
    linked, linkable = await _identities(request, principal)
    usage = await account_usage(gw, principal)
    return render(
        request,
        "account.html",
        principal=principal,
        active="account",
        sessions=rows,
        sessions_total=sessions.total,
        sessions_next=sessions.next_cursor,
        sessions_paged=cursor is not None,
        has_password=row.password_hash is not None,
        min_length=site(request).password_min_length,
        identities=linked,
        linkable=linkable,
        **usage,
        **await second_factors(gw, principal),
        **second,
        pending=principal.user.role == Role.PENDING,
        notice=notice,
        error=error,
        status_code=status_code,
    )


async def second_factors(gw: Gateway, principal: Principal) -> dict[str, Any]:
    """What the pages show of the person's own second factors, and the "Confirm it is you" form."""
    factors = await anyio.to_thread.run_sync(gw.mfa.factors_of, principal.user.id)
    return {
        "factors": factors,
        "must_enrol": gw.mfa.enrolment_required(principal.user, principal.claims) and not factors.any,
        "passkeys_available": gw.mfa.policy.relying_party is not None,
        "step_up_minutes": max(1, gw.mfa.policy.step_up_max_age // 60),
    }


async def _identities(
    request: Request, principal: Principal
) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """The provider identities linked to the account, and the providers it could still link."""
    gw = gateway(request)
    rows = await anyio.to_thread.run_sync(gw.directory.identities_of, principal.user.id)
    names = dict(site(request).sign_on_providers)
    linked = [
        {"provider_label": names.get(r.provider, r.provider), "email": r.email or "", "subject": r.subject}
        for r in rows
    ]
    taken = {r.provider for r in rows}
    return linked, [(pid, name) for pid, name in names.items() if pid not in taken]


def _session_view(session: Any, principal: Principal) -> dict[str, Any]:
    return {
        "id": session.id,
        "current": session.id == principal.claims.session_id,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "created_at": session.created_at,
        "last_seen_at": session.last_seen_at,
    }


async def _account_action(
    request: Request,
    action: Callable[[Gateway, Principal], Awaitable[str]],
    *,
    page: str = "/account",
    fields: Callable[[ApiError], dict[str, Any]] | None = None,
) -> Response:
    """Run a form's change for the signed-in person: on to the page it names, or back to the account
    page with the refusal (`fields`: the refusal tied to the form's fields instead, and what to keep)."""
    principal = await optional_principal(request)
    if principal is None:
        return to_auth(request, page)
    gw = gateway(request)
    try:
        location = await action(gw, principal)
    except ApiError as exc:  # shown on the page it came from; never carried in an address
        tied = fields(exc) if fields is not None and exc.code != "step_up_required" else {}
        return await account_view(
            request,
            principal,
            error=None if tied else exc.detail,
            status_code=exc.status_code,
            step_up=exc.code == "step_up_required",
            **tied,
        )
    response = RedirectResponse(page_path(request, location), status_code=303)
    if location.startswith("/auth"):
        clear_token_cookie(response, request)
    return response


@router.post("/oauth/{provider}/link", include_in_schema=False)
async def link_provider_form(request: Request, provider: str = Path(max_length=64)) -> Response:
    """The account page's "Link <provider>" button: the person proves presence first (the current
    password, or a sign-in from the last ten minutes), so that a borrowed or stolen session cannot
    bind its own provider identity to the account as a way back in."""
    form = await form_fields(request)
    principal = await optional_principal(request)
    if principal is None:
        return to_auth(request, "/account")  # a form post is not a page to come back to
    gw = gateway(request)
    confirm = partial(
        gw.accounts.confirm_presence, principal.user.id, form.get("password"), principal.claims.issued_at
    )
    try:
        await anyio.to_thread.run_sync(confirm)
        return await start_link(request, gw, provider, principal)
    except ApiError as exc:  # shown on the account page, like its other forms
        return await account_view(request, principal, error=exc.detail, status_code=exc.status_code)


@router.post("/account/password")
async def change_password_form(request: Request) -> Response:
    """Change the password; every session ends, so the person signs in again."""
    form = await form_fields(request)
    new, again = form.get("new_password", ""), form.get("confirm_password")

    async def act(gw: Gateway, principal: Principal) -> str:
        await anyio.to_thread.run_sync(gw.mfa.require_step_up, principal.user, principal.claims)
        if again is not None and new != again:
            raise BadRequestError("The two new passwords are not the same.", code="password_mismatch")
        await anyio.to_thread.run_sync(
            gw.accounts.change_password, principal.user.id, form.get("password", ""), new
        )
        return "/auth?notice=password"

    def fields(exc: ApiError) -> dict[str, Any]:
        """A wrong current password keeps the new one typed (the page is `no-store`); a refused new
        password is typed again."""
        if exc.code == "incorrect_password":
            return {"password_errors": {"current": exc.detail}, "kept_new": new[:1024]}
        if exc.code == "password_mismatch":
            return {"password_errors": {"confirm": exc.detail}, "kept_new": new[:1024]}
        if exc.code.startswith("password"):
            return {"password_errors": {"new": exc.detail}}
        return {}

    return await _account_action(request, act, page="/account#password", fields=fields)


@router.post("/account/sessions/{session_id}/revoke")
async def revoke_session_form(request: Request, session_id: str) -> Response:
    """Sign out one of the person's sessions."""

    async def act(gw: Gateway, principal: Principal) -> str:
        await anyio.to_thread.run_sync(gw.accounts.revoke_session, principal.user.id, session_id)
        return (
            "/auth?notice=signed-out"
            if session_id == principal.claims.session_id
            else "/account?notice=session#sessions"
        )

    return await _account_action(request, act, page="/account#sessions")


@router.post("/account/sessions/revoke-all")
async def revoke_all_form(request: Request) -> Response:
    """Sign out everywhere, this browser included."""

    async def act(gw: Gateway, principal: Principal) -> str:
        await anyio.to_thread.run_sync(gw.accounts.revoke_all_sessions, principal.user.id)
        return "/auth?notice=signed-out-everywhere"

    return await _account_action(request, act, page="/account#sessions")
