"""Server-rendered pages: the Jinja2 environment, its filters, and safe redirect targets."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from wardgate.identity.authentication import Principal
from wardgate.storage.paging import COUNT_CAP

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_SAFE_PATH = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")  # printable ASCII, no backslash


def safe_redirect_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site, else `default` (no open redirect; OWASP Unvalidated
    Redirects). Only a path-absolute reference of printable ASCII passes: no scheme, no `//host` or
    `/\\host` (browsers read both as another host), no backslash, space or control character
    anywhere, no `:` in the first segment."""
    if not target or len(target) > 2048 or not _SAFE_PATH.fullmatch(target):
        return default
    if ":" in target.split("?", 1)[0].split("/", 2)[1]:
        return default
    return target


def return_target(request: Request, target: str | None, default: str = "/") -> str:
    """Where to send a person after signing in: a path here (`safe_redirect_path`), or an absolute
    http(s) URL on a host that FORWARD_AUTH_FILE protects (the app that sent them to sign in) —
    never anywhere else, so the sign-in page is no open redirect."""
    path = safe_redirect_path(target, "")
    if path:
        return path
    guarded = request.app.state.site.forward_auth
    if guarded is None or not target or len(target) > 2048 or _CONTROL.search(target):
        return default
    try:
        parts = urlsplit(target)
    except ValueError:
        return default
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return default
    site = request.app.state.site
    if parts.scheme == "http" and not (site.public_url or "").startswith("http://"):
        return default  # no way back over plain HTTP from an HTTPS deployment
    try:
        port = parts.port
    except ValueError:
        return default
    found = guarded.site_for(parts.netloc.lower())
    if found is None or (":" not in found.host and port not in (None, 80 if parts.scheme == "http" else 443)):
        return default  # a site named without a port is its default port here, not any service
    return target


def leave_for(request: Request, target: str) -> RedirectResponse:
    """The answer to a form that ends at `target`: a redirect, through `/auth/continue` for another
    site's address (CSP `form-action 'self'` also covers where a form's redirects lead)."""
    if target.startswith("/"):
        return RedirectResponse(target, status_code=303)
    onward = request.app.state.site.at(f"/auth/continue?to={quote(target, safe='')}")
    return RedirectResponse(onward, status_code=303)


def _when(epoch: int | None) -> str:
    if not epoch:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _isotime(epoch: int | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch or 0))


def _device(user_agent: str | None) -> str:
    """A short human description of a user agent ("Firefox on Linux")."""
    if not user_agent:
        return "Unknown device"
    browsers = (
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
        ("python-httpx", "Python (httpx)"),
        ("python-requests", "Python (requests)"),
    )
    systems = (
        ("Windows", "Windows"),
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    )
    browser = next((name for marker, name in browsers if marker in user_agent), "Browser")
    system = next((name for marker, name in systems if marker in user_agent), "")
    return f"{browser} on {system}" if system else browser


def _count(total: int) -> str:
    """A capped count as people read it: "10,000+" past the cap (`wardgate.storage.paging`)."""
    return f"{COUNT_CAP:,}+" if total > COUNT_CAP else f"{total:,}"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False
    )
    env.filters.update({"when": _when, "isotime": _isotime, "device": _device, "at_most": _count})
    return env


_ENV = _environment()


def render(
    request: Request,
    template: str,
    *,
    principal: Principal | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """Render a page with the common context (site name, signed-in user)."""
    site = request.app.state.site
    values = {
        "site_name": site.name,
        "base": site.prefix,
        "user": principal.user if principal else None,
        "error": None,
        "notice": None,
        **context,
    }
    html = _ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
