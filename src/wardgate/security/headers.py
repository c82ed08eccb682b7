"""The response-header policy: the checked header variables, pre-encoded once for the middleware.

`wardgate.config.headers` holds the table of variables and checks their values at load; here those
values become the header pairs added to wardgate's own HTML pages, to its other responses, and to
proxied responses, plus HSTS for HTTPS requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

from wardgate.config.headers import HEADER_VARIABLES, HeaderVariable

HeaderPairs: TypeAlias = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class HeaderPolicy:
    """Pre-encoded response headers: for HTML, for other responses, for proxied ones, and HSTS."""

    html: HeaderPairs
    other: HeaderPairs
    proxied: HeaderPairs
    """Added to a proxied upstream response (only when the middleware is told to enforce on it)."""
    hsts: bytes | None
    """Strict-Transport-Security, for HTTPS requests only: RFC 6797 §7.2 forbids it over plain HTTP."""


def _emitted(variable: HeaderVariable, value: str | None, frame_ancestors: str) -> tuple[str, str, str]:
    """The header value for HTML, other and proxied responses ("" = no header)."""
    if value is not None:  # set by the administrator: applies to every response, as configured
        return value, value, value
    other = variable.default or ""
    html = variable.html_default or other
    if variable.env_name == "CONTENT_SECURITY_POLICY":
        # Keep the default CSP consistent with XFRAME_OPTIONS=SAMEORIGIN: frame-ancestors takes
        # precedence over X-Frame-Options in browsers (CSP3 §6.4.2), so 'none' would silently win.
        html = html.replace("frame-ancestors 'none'", frame_ancestors)
        other = other.replace("frame-ancestors 'none'", frame_ancestors)
    return html, other, other if variable.default_on_proxied else ""


def build_header_policy(configured: Mapping[str, str | None]) -> HeaderPolicy:
    """Pre-encode the headers from checked values (`Settings.security_headers`)."""
    same_origin_frames = configured.get("XFRAME_OPTIONS") == "SAMEORIGIN"
    frame_ancestors = "frame-ancestors 'self'" if same_origin_frames else "frame-ancestors 'none'"
    html: list[tuple[bytes, bytes]] = []
    other: list[tuple[bytes, bytes]] = []
    proxied: list[tuple[bytes, bytes]] = []
    hsts: bytes | None = None
    for variable in HEADER_VARIABLES:
        name = variable.header.lower().encode("ascii")
        value = configured.get(variable.env_name)
        for_html, for_other, for_proxied = _emitted(variable, value, frame_ancestors)
        if variable.env_name == "HSTS":
            hsts = for_other.encode("ascii") or None
            continue
        for target, text in ((html, for_html), (other, for_other), (proxied, for_proxied)):
            if text:
                target.append((name, text.encode("ascii")))
    return HeaderPolicy(html=tuple(html), other=tuple(other), proxied=tuple(proxied), hsts=hsts)
