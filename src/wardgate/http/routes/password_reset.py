"""Forgot password: the pages that ask for a reset link and set the new password with it.

Offered when the mail server is configured (`identity.password_reset`); otherwise these addresses
are not found and the sign-in page has no link to them. The answer to a request is the same whether
or not the address is an account's; the email goes out after the answer, in a worker thread.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from functools import partial

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.background import BackgroundTask

from wardgate.errors import ApiError
from wardgate.http.cookies import clear_token_cookie
from wardgate.http.deps import client_info, site
from wardgate.http.forms import form_fields
from wardgate.http.rendering import render
from wardgate.identity.authentication import TOKEN_COOKIE
from wardgate.identity.mail import MailError
from wardgate.identity.password_reset import PasswordResets

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


def resets_of(request: Request) -> PasswordResets | None:
    """The reset service when the site sends reset links (SMTP_HOST), else None."""
    found: PasswordResets | None = getattr(request.app.state, "password_resets", None)
    return found


def _not_offered(request: Request) -> Response:
    return render(
        request,
        "error.html",
        status_code=404,
        heading="Password reset is not available",
        message="This site does not send password-reset emails. Ask an administrator to reset your password.",
        back=site(request).at("/auth"),
        back_label="Back to sign-in",
    )


@router.get("/auth/forgot")
async def forgot_page(request: Request) -> Response:
    """The form that asks for a reset link."""
    service = resets_of(request)
    if service is None:
        return _not_offered(request)
    return render(request, "forgot.html", email="", minutes=service.policy.minutes, sent=False)


@router.post("/auth/forgot")
async def forgot_form(request: Request) -> Response:
    """Send a reset link if the address is an account's; the same answer either way."""
    service = resets_of(request)
    if service is None:
        return _not_offered(request)
    form = await form_fields(request)
    email = form.get("email", "")[:320]
    try:
        message = await anyio.to_thread.run_sync(service.request, email, client_info(request))
    except ApiError as exc:
        page = render(
            request,
            "forgot.html",
            status_code=exc.status_code,
            email=email,
            minutes=service.policy.minutes,
            sent=False,
            field_error=exc.detail,
        )
        page.headers.update(exc.headers or {})  # a 429 keeps its Retry-After
        return page
    response = render(request, "forgot.html", email=email, minutes=service.policy.minutes, sent=True)
    if message is not None:
        response.background = BackgroundTask(_deliver, service, message)
    return response


async def _deliver(service: PasswordResets, message: EmailMessage) -> None:
    """Send after the answer went out; a failure is logged and audited, never shown (the answer
    must not say whether an account exists)."""
    try:
        await anyio.to_thread.run_sync(service.mailer.send, message)
    except MailError as exc:
        log.warning("password reset email not sent: %s", exc)
        await anyio.to_thread.run_sync(partial(service.mail_failed, str(message["To"]), type(exc).__name__))


@router.get("/auth/reset")
async def reset_page(request: Request, token: str = "") -> Response:
    """The new-password form for a valid link; for any other, why it does not work and what next."""
    service = resets_of(request)
    if service is None:
        return _not_offered(request)
    try:
        target = await anyio.to_thread.run_sync(service.check, token[:200])
    except ApiError as exc:
        return render(request, "reset.html", status_code=exc.status_code, invalid=exc.detail, token="")
    page = _reset_form(request, token, target.email)
    # The link is in this page's address: never sent on as a Referer, whatever REFERRER_POLICY says.
    page.headers["Referrer-Policy"] = "no-referrer"
    return page


def _reset_form(
    request: Request, token: str, email: str, status_code: int = 200, **errors: str | None
) -> Response:
    return render(
        request,
        "reset.html",
        status_code=status_code,
        token=token,
        email=email,
        min_length=site(request).password_min_length,
        invalid=None,
        new_error=errors.get("new_error"),
        confirm_error=errors.get("confirm_error"),
    )


@router.post("/auth/reset")
async def reset_form(request: Request) -> Response:
    """Set the new password; every session ends and the person signs in with it."""
    service = resets_of(request)
    if service is None:
        return _not_offered(request)
    form = await form_fields(request)
    token = form.get("token", "")[:200]
    new, again = form.get("new_password", ""), form.get("confirm_password", "")
    try:
        target = await anyio.to_thread.run_sync(service.check, token)
    except ApiError as exc:
        return render(request, "reset.html", status_code=exc.status_code, invalid=exc.detail, token="")
    if new != again:
        return _reset_form(
            request, token, target.email, 400, confirm_error="The two passwords are not the same."
        )
    try:
        await anyio.to_thread.run_sync(service.complete, token, new)
    except ApiError as exc:
        if exc.code == "reset_link_invalid":
            return render(request, "reset.html", status_code=exc.status_code, invalid=exc.detail, token="")
        return _reset_form(request, token, target.email, exc.status_code, new_error=exc.detail)
    response = RedirectResponse(site(request).at("/auth?notice=password-reset"), status_code=303)
    if request.cookies.get(TOKEN_COOKIE):  # its session ended with the others
        clear_token_cookie(response, request)
    return response
