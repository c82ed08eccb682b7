"""Server-rendered pages: the Jinja2 environment, its filters, and safe redirect targets."""

from __future__ import annotations

import re
import time
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from wardgate.audit.log import AuditRecord
from wardgate.config.review import severity_of
from wardgate.http.static_files import StaticAssets
from wardgate.identity.authentication import Principal
from wardgate.storage.paging import COUNT_CAP

if TYPE_CHECKING:
    from jinja2 import Environment

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


# Security events in words (the admin page): what happened, and the codes in their details.
_EVENTS = {
    "auth.signin": "Sign-in",
    "auth.signout": "Sign-out",
    "auth.signup": "Sign-up",
    "auth.session_revoked": "Session signed out",
    "auth.sessions_revoked": "Every session signed out",
    "auth.backchannel_logout": "Signed out by the sign-in provider",
    "auth.password_changed": "Password changed",
    "auth.password_reset_requested": "Password reset asked for",
    "auth.password_reset_mail": "Password reset email",
    "auth.password_reset": "Password reset with an emailed link",
    "auth.mfa_challenge": "Second factor asked for",
    "auth.mfa_verified": "Second factor shown",
    "auth.mfa_step_up": "Identity confirmed for a change",
    "auth.passkey_clone_suspected": "Passkey may have been copied",
    "auth.sso_linked": "Sign-in provider linked",
    "user.created": "Account created",
    "user.deleted": "Account deleted",
    "user.disabled": "Account disabled",
    "user.enabled": "Account enabled",
    "user.role_changed": "Role changed",
    "user.updated": "Account changed",
    "mfa.totp_enabled": "Authenticator app turned on",
    "mfa.totp_disabled": "Authenticator app turned off",
    "mfa.passkey_added": "Passkey added",
    "mfa.passkey_removed": "Passkey removed",
    "mfa.recovery_codes_regenerated": "New recovery codes made",
    "mfa.reset": "Second factors reset by an admin",
    "api_key.created": "API key created",
    "api_key.revoked": "API key revoked",
    "api_key.refused": "API key refused",
    "config.warning": "Production finding at start-up",
    "usage.budget_exhausted": "Token budget used up",
}
_OUTCOMES = {"success": ("succeeded", "ok"), "failure": ("failed", "off"), "refused": ("refused", "off")}
_DETAILS = {
    "invalid_credentials": "wrong email or password",
    "incorrect_password": "wrong current password",
    "account_disabled": "the account is disabled",
    "rate_limited": "too many attempts",
    "email_taken": "the email is already registered",
    "signup_disabled": "sign-up is closed",
    "password_too_short": "the new password is too short",
    "password_policy": "the new password does not meet the policy",
    "step_up_required": "needed a recent second factor",
    "invalid_code": "wrong code",
    "reset_link_invalid": "the link was used, expired or replaced",
    "no account": "no account has that address",
    "no password here": "the account signs in through a provider",
    "MailError": "the mail server could not be reached or refused it",
}


_ID_DETAIL = re.compile(r"(?:session|key|passkey) [0-9a-f-]{6,}")


def _words(code: str) -> str:
    """`role=admin` is "role admin", `some_code` is "some code"."""
    return code.replace("=", " ").replace("_", " ")


def _event_view(record: AuditRecord) -> dict[str, str]:
    """An event as people read it: a title, the outcome and the detail in words."""
    title = _EVENTS.get(record.event) or _words(record.event.rpartition(".")[2]).capitalize()
    outcome, outcome_class = _OUTCOMES.get(record.outcome, (_words(record.outcome), ""))
    detail = record.detail or ""
    via = ""
    if detail.startswith(("oauth:", "ldap")):  # "oauth:<provider> <code>": the way in, then why
        via, _, detail = detail.partition(" ")
        via = "with " + via.removeprefix("oauth:")
    if _ID_DETAIL.fullmatch(detail):  # "session 72c7e39e": an id means nothing to a reader
        detail = ""
    said = _DETAILS.get(detail, _words(detail))
    return {
        "title": title,
        "outcome": outcome,
        "outcome_class": outcome_class,
        "detail": ", ".join(part for part in (via, said) if part),
    }


def _finding(text: str) -> dict[str, str]:
    """A production finding (`VARIABLE: why Fix: how`) as the admin page shows it: the why and the
    fix first, in words, with its severity; the variable after them."""
    variable, _, rest = text.partition(": ")
    severity = severity_of(text)
    return {
        "severity": severity,
        "severity_label": {"high": "High", "medium": "Medium"}.get(severity, severity.capitalize()),
        "variable": variable,
        "text": rest[:1].upper() + rest[1:],
    }


@cache
def _environment() -> Environment:
    """Built at the first page (Jinja2 costs 2 MB and 15 ms of start-up; an API-only site never
    renders a page)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), auto_reload=False
    )
    env.filters.update(
        {
            "when": _when,
            "isotime": _isotime,
            "device": _device,
            "at_most": _count,
            "event_view": _event_view,
            "finding": _finding,
        }
    )
    return env


def _asset_url(prefix: str, assets: StaticAssets | None, name: str) -> str:
    """A static file's address: its fingerprinted name where `StaticAssets` serves the directory."""
    return f"{prefix}/static/{assets.url_name(name) if assets is not None else name}"


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
    assets: StaticAssets | None = getattr(request.app.state, "static_assets", None)
    values = {
        "site_name": site.name,
        "base": site.prefix,
        "asset": partial(_asset_url, site.prefix, assets),
        "user": principal.user if principal else None,
        "error": None,
        "notice": None,
        **context,
    }
    html = _environment().get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
