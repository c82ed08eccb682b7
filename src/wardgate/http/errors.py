"""Error responses: every refusal is `{"detail": ...}` with its status; nothing leaks a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wardgate.errors import ApiError, EnrolmentRequiredError, RateLimitedError, StoreUnavailableError
from wardgate.http.schemas import ErrorBody
from wardgate.observability.metrics import observe_refusal

log = logging.getLogger(__name__)

# What the OpenAPI document shows for each refusal a route can give.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Refused input",
        401: "Missing, invalid, expired or revoked credential",
        403: "Not allowed (role, account state or CSRF)",
        404: "Not found",
        413: "Request body too large",
        429: "Too many attempts",
        503: "A store is unavailable or the server is busy",
    }.items()
}


def error_response(exc: ApiError | StoreUnavailableError | StarletteHTTPException) -> JSONResponse:
    """The JSON refusal for an error (also used where FastAPI's handlers do not run)."""
    if isinstance(exc, RateLimitedError):  # rate limits, budgets and admission control, counted
        observe_refusal(exc.code, exc.bucket)
    if isinstance(exc, StoreUnavailableError):
        log.warning("store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "Authentication is temporarily unavailable. Please try again shortly."},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def unexpected_error_response(exc: Exception) -> JSONResponse:
    """A 500 that says nothing about the cause; the cause goes to the log."""
    log.error("unhandled error", exc_info=exc)
    return JSONResponse({"detail": "Internal server error."}, status_code=500)


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, ApiError | StoreUnavailableError):
        raise exc
    return error_response(exc)


def _enrolment_required(request: Request, exc: Exception) -> Response:
    """API callers get the 403; people on a page are sent to the enrolment on their account page."""
    if not isinstance(exc, EnrolmentRequiredError):
        raise exc
    site = request.app.state.site
    if request.url.path.startswith(site.at("/api/")) or request.method not in ("GET", "HEAD", "POST"):
        return error_response(exc)
    return RedirectResponse(site.at("/account?notice=mfa-required#mfa"), status_code=303)


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    return error_response(exc)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    # The submitted values are left out on purpose: they may be passwords.
    problems = [
        {"loc": list(err.get("loc", ())), "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a JSON `detail`."""
    app.add_exception_handler(EnrolmentRequiredError, _enrolment_required)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreUnavailableError, _api_error)
    app.add_exception_handler(Exception, _unexpected)
