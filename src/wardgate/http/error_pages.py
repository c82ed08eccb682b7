"""Errors as pages for people, JSON for programs: the same refusal, told to whoever asked.

A browser that navigates (`Sec-Fetch-Dest: document`, or `text/html` in `Accept`; RFC 9110 §12.5.1)
to an address of wardgate's outside `/api/` gets an HTML page that says what happened and where to
go; everything else keeps the JSON `{"detail": ...}` of `wardgate.http.errors` — API clients,
`fetch()` from the pages (it sends `*/*`), and anything under `/api/`, whatever it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wardgate.http.errors import error_response, unexpected_error_response
from wardgate.http.rendering import render

# What a page says for a status: (title, what happened, what to do).
_PAGES: dict[int, tuple[str, str, str]] = {
    404: (
        "Page not found",
        "There is no page at this address.",
        "It may be mistyped, or the link that led here is out of date.",
    ),
    405: (
        "This address is for a form",
        "This address takes a submitted form only, so it cannot be opened as a page.",
        "This happens when a form's address is bookmarked or opened again: go to the page the form "
        "is on and send it from there.",
    ),
    413: ("Too much at once", "What was sent is larger than this site accepts.", "Send less and try again."),
    429: (
        "Too many attempts",
        "There were too many attempts in a short time.",
        "Wait a little, then try again.",
    ),
    500: (
        "Something went wrong",
        "The page could not be shown because of a problem on the server.",
        "Try again in a moment. If it keeps happening, tell the person who runs this site.",
    ),
}
_OTHER = ("Not possible", "That could not be done.", "Go back and try again.")


def wants_page(request: Request) -> bool:
    """True for a browser navigating to one of wardgate's own pages (not the API)."""
    site = request.app.state.site
    if request.url.path.startswith(site.at("/api/")):
        return False
    if request.headers.get("sec-fetch-dest") == "document":
        return True
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/xhtml+xml" in accept


def error_page(request: Request, status_code: int, headers: Mapping[str, str] | None = None) -> Response:
    """The HTML page for a refusal or failure with this status."""
    heading, message, hint = _PAGES.get(status_code, _OTHER)
    response = render(
        request,
        "error.html",
        status_code=status_code,
        heading=heading,
        message=message,
        hint=hint,
        back=request.app.state.site.at("/"),
        back_label="Go to the start page",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown address, wrong method, ...): a page or the JSON refusal."""
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    if wants_page(request):
        return error_page(request, exc.status_code, exc.headers)
    return error_response(exc)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """A 500 that says nothing of the cause (logged by `unexpected_error_response`)."""
    response = unexpected_error_response(exc)
    return error_page(request, 500) if wants_page(request) else response


def install_error_pages(app: FastAPI) -> None:
    """Answer browsers with pages (after `install_error_handlers`, whose JSON stays for the rest)."""
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
