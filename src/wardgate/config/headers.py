"""Security response headers: Open WebUI's variables, validated at start-up, strict by default.

Every variable in `HEADER_VARIABLES` has three states:

- unset (None): wardgate's default applies (a safe one, unlike Open WebUI, which sends nothing);
- empty string: the header is switched off explicitly;
- anything else: it must validate, or start-up stops with a `ConfigError` naming the variable,
  its value and the accepted form. Open WebUI silently replaces invalid values; we never do.

Values are checked once here, at load (`checked_headers`); `wardgate.security.headers` turns them
into pre-encoded header pairs, so the middleware does no parsing per request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

Validator: TypeAlias = Callable[[str], str | None]
"""Returns the value to emit (possibly in canonical spelling), or None when the value is invalid."""

# Any C0 control character or DEL: CR/LF would let a value inject headers (response splitting,
# OWASP "HTTP Response Splitting"), and RFC 9110 §5.5 forbids the rest in field values.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_CHARS = 60


def _one_of(*tokens: str) -> Validator:
    """Accept one of `tokens` in any case (as Open WebUI does) and emit its canonical spelling.

    Browsers compare most of these tokens case-sensitively (Referrer Policy §8.1, Fetch's CORP and
    structured-field tokens), so `NO-REFERRER` would be ignored: we emit the spelling they expect.
    """
    canonical = {token.lower(): token for token in tokens}

    def check(value: str) -> str | None:
        return canonical.get(value.lower()) if value.isascii() else None

    return check


def _matching(pattern: str, *, lower: bool = False, ignore_case: bool = True) -> Validator:
    """Accept values that fully match `pattern`; optionally emit them lower-cased."""
    # re.ASCII: \d and \s must not match non-ASCII digits or spaces; headers are ASCII (RFC 9110 §5.5).
    compiled = re.compile(pattern, (re.IGNORECASE if ignore_case else 0) | re.ASCII)

    def check(value: str) -> str | None:
        if compiled.fullmatch(value) is None:
            return None
        return value.lower() if lower else value

    return check


# RFC 6797 §6.1; Open WebUI's R-HSTS plus optional spaces after ";". Directive names are case-insensitive.
_HSTS = r"max-age=\d+(?:;\s*includeSubDomains)?(?:;\s*preload)?"

# Open WebUI's R-PERM feature list. Unlike R-PERM, items must be separated by commas (a space may
# follow) and a trailing comma is refused: it makes the structured-field dictionary invalid
# (RFC 8941 §4.2.2), and the browser would then ignore the whole header. Keys must be lower-case.
_FEATURES = (
    "accelerometer|autoplay|camera|clipboard-read|clipboard-write|fullscreen|geolocation|gyroscope|"
    "magnetometer|microphone|midi|payment|picture-in-picture|sync-xhr|usb|xr-spatial-tracking"
)
_PERMISSION = rf"(?:{_FEATURES})=\((?:self)?\)"
_PERMISSIONS = rf"{_PERMISSION}(?:,\s*{_PERMISSION})*"

# Open WebUI's R-CACHE (RFC 9111 §5.2 directives; names are case-insensitive).
_CACHE_DIRECTIVE = (
    r"(?:public|private|no-cache|no-store|must-revalidate|proxy-revalidate|max-age=\d+|s-maxage=\d+"
    r"|no-transform|immutable)"
)
_CACHE = rf"{_CACHE_DIRECTIVE}(?:,\s*{_CACHE_DIRECTIVE})*"

# CSP Level 3 §2.2.1 grammar for one serialized policy: directive names, then values made of visible
# ASCII except "," and ";". A "," would start a second policy, which we do not accept in one variable.
_CSP_DIRECTIVE = r"[A-Za-z0-9-]+(?:[ \t]+[\x21-\x2b\x2d-\x3a\x3c-\x7e]+)*"
_CSP = rf"{_CSP_DIRECTIVE}(?:[ \t]*;[ \t]*(?:{_CSP_DIRECTIVE})?)*"

# Reporting API, Reporting-Endpoints: a structured-field dictionary of endpoint name -> quoted URL.
_ENDPOINT = r'[a-z*][a-z0-9_.*-]*="https?://[\x21\x23-\x5b\x5d-\x7e]+"'
_ENDPOINTS = rf"{_ENDPOINT}(?:\s*,\s*{_ENDPOINT})*"

_CSP_FORM = "a Content-Security-Policy such as default-src 'self'; frame-ancestors 'none'"

# The CSP defaults: wardgate's own pages load scripts, styles, images and fonts only from itself
# and may not be framed (OWASP Clickjacking Defense: frame-ancestors); JSON needs nothing at all.
DEFAULT_HTML_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
DEFAULT_OTHER_CSP = "default-src 'none'; frame-ancestors 'none'"


@dataclass(frozen=True, slots=True)
class HeaderVariable:
    """One configurable response header: its variable, header, default, validator and accepted form."""

    env_name: str
    header: str
    default: str | None
    validator: Validator
    accepts: str
    html_default: str | None = None
    """Default for HTML responses when it differs from `default` (only the CSP has one)."""
    default_on_proxied: bool = True
    """False when the default describes wardgate's own content and would break a proxied app."""

    def check(self, raw: str) -> str:
        """The value to emit ("" = switched off), or ValueError with a message naming the variable."""
        shown = repr(raw[:_SHOWN_CHARS]) + ("..." if len(raw) > _SHOWN_CHARS else "")
        if _CONTROL.search(raw):
            raise ValueError(
                f"{self.env_name}={shown}: contains a control character (such as CR or LF); "
                "a header value must be one line of printable text"
            )
        value = raw.strip()
        if value == "":
            return ""
        canonical = self.validator(value)
        if canonical is None:
            default = "wardgate's strict policy" if self.html_default else self.default or "no header"
            raise ValueError(
                f"{self.env_name}={shown}: expected {self.accepts} "
                f"(unset it for the default: {default}; set it empty to send no {self.header} header)"
            )
        return canonical


HEADER_VARIABLES: tuple[HeaderVariable, ...] = (
    HeaderVariable(
        "HSTS",
        "Strict-Transport-Security",
        "max-age=31536000; includeSubDomains",
        _matching(_HSTS),
        "max-age=<seconds>, optionally followed by ; includeSubDomains and then ; preload",
    ),
    HeaderVariable(
        "XFRAME_OPTIONS", "X-Frame-Options", "DENY", _one_of("DENY", "SAMEORIGIN"), "DENY or SAMEORIGIN"
    ),
    HeaderVariable("XCONTENT_TYPE", "X-Content-Type-Options", "nosniff", _one_of("nosniff"), "nosniff"),
    HeaderVariable("XDOWNLOAD_OPTIONS", "X-Download-Options", "noopen", _one_of("noopen"), "noopen"),
    HeaderVariable(
        "XPERMITTED_CROSS_DOMAIN_POLICIES",
        "X-Permitted-Cross-Domain-Policies",
        "none",
        _one_of("none", "master-only", "by-content-type", "by-ftp-filename"),
        "none, master-only, by-content-type or by-ftp-filename",
    ),
    HeaderVariable(
        "REFERRER_POLICY",
        "Referrer-Policy",
        # Not no-referrer: under it browsers send `Origin: null` on same-origin form posts (Fetch
        # Standard, "append a request `Origin` header"), which defeats CSRFMiddleware's Origin check.
        # same-origin leaks nothing to other origins either.
        "same-origin",
        _one_of(
            "no-referrer",
            "no-referrer-when-downgrade",
            "origin",
            "origin-when-cross-origin",
            "same-origin",
            "strict-origin",
            "strict-origin-when-cross-origin",
            "unsafe-url",
        ),
        "one of no-referrer, no-referrer-when-downgrade, origin, origin-when-cross-origin, same-origin, "
        "strict-origin, strict-origin-when-cross-origin, unsafe-url",
    ),
    HeaderVariable(
        "PERMISSIONS_POLICY",
        "Permissions-Policy",
        "accelerometer=(),camera=(),geolocation=(),gyroscope=(),magnetometer=(),"
        "microphone=(),payment=(),usb=()",
        _matching(_PERMISSIONS, lower=True),
        f"comma-separated feature=() or feature=(self) items, features: {_FEATURES.replace('|', ', ')}",
        default_on_proxied=False,  # the upstream UI may need the microphone or camera (voice input)
    ),
    HeaderVariable(
        "CACHE_CONTROL",
        "Cache-Control",
        "no-store, max-age=0",
        _matching(_CACHE),
        "comma-separated Cache-Control directives such as no-store, max-age=0 "
        "(public, private, no-cache, no-store, must-revalidate, proxy-revalidate, max-age=N, s-maxage=N, "
        "no-transform, immutable)",
        default_on_proxied=False,  # an upstream app's static assets are its business to cache
    ),
    HeaderVariable(
        "CONTENT_SECURITY_POLICY",
        "Content-Security-Policy",
        DEFAULT_OTHER_CSP,
        _matching(_CSP),
        _CSP_FORM,
        html_default=DEFAULT_HTML_CSP,
        default_on_proxied=False,  # wardgate's CSP would block the upstream UI's own scripts
    ),
    HeaderVariable(
        "CONTENT_SECURITY_POLICY_REPORT_ONLY",
        "Content-Security-Policy-Report-Only",
        None,
        _matching(_CSP),
        _CSP_FORM,
    ),
    HeaderVariable(
        "CROSS_ORIGIN_OPENER_POLICY",
        "Cross-Origin-Opener-Policy",
        "same-origin",
        _one_of("unsafe-none", "same-origin-allow-popups", "same-origin"),
        "unsafe-none, same-origin-allow-popups or same-origin",
    ),
    HeaderVariable(
        "CROSS_ORIGIN_RESOURCE_POLICY",
        "Cross-Origin-Resource-Policy",
        "same-origin",
        _one_of("same-site", "same-origin", "cross-origin"),
        "same-site, same-origin or cross-origin",
    ),
    HeaderVariable(
        "CROSS_ORIGIN_EMBEDDER_POLICY",
        "Cross-Origin-Embedder-Policy",
        None,
        _one_of("unsafe-none", "require-corp", "credentialless"),
        "unsafe-none, require-corp or credentialless",
    ),
    HeaderVariable(
        "REPORTING_ENDPOINTS",
        "Reporting-Endpoints",
        None,
        _matching(_ENDPOINTS, ignore_case=False),  # keys are lower-case sf-keys (RFC 8941 §3.1.2)
        'comma-separated name="https://..." endpoints, e.g. csp="https://reports.example.com/csp"',
    ),
)

HEADER_ENV_NAMES: tuple[str, ...] = tuple(variable.env_name for variable in HEADER_VARIABLES)


def checked_headers(values: Mapping[str, str]) -> tuple[dict[str, str | None], list[str]]:
    """Each variable's value to emit (None = unset: the default applies, "" = off) and every problem."""
    configured: dict[str, str | None] = {}
    problems: list[str] = []
    for variable in HEADER_VARIABLES:
        raw = values.get(variable.env_name)
        if raw is None:
            configured[variable.env_name] = None
            continue
        try:
            configured[variable.env_name] = variable.check(raw)
        except ValueError as exc:
            problems.append(str(exc))
    return configured, problems
