"""Forward auth: a reverse proxy asks whether a request may pass; wardgate answers from the view.

The proxy (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`) sends the original
request's method, scheme, host and URI, and the client's own headers (its cookie, `Authorization`).
The answer is a `Decision`: 200 with the identity headers the proxy copies to the app, 401 (or 302
to sign in, for a browser, where the proxy passes the answer on), or 403. Deciding is pure CPU: the
credential was checked against the in-memory revocation view, and the rules are the configured
sites (`wardgate.config.forward_auth`) — the same role, group, pending and key-scope rules as the
built-in proxy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from wardgate.config.forward_auth import ForwardAuth, Site
from wardgate.config.values import Role
from wardgate.identity.authentication import Caller, KeyPrincipal

UPSTREAM_NAME = "forward-auth"  # what an API key's upstream scope must list to pass forward auth
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_KEPT = " !#$&'()*+,/:;=?@[]~"  # printable ASCII passes as it is; "%", '"' and the rest are encoded


@dataclass(frozen=True, slots=True)
class Original:
    """The request the proxy is asking about."""

    method: str
    scheme: str
    host: str  # lower case, with the port when it is not the scheme's default
    uri: str  # path and query, as the client sent them

    @property
    def path(self) -> str:
        """The path, without the query."""
        return self.uri.split("?", 1)[0] or "/"

    @property
    def url(self) -> str:
        """The absolute URL, for the way back after sign-in."""
        return f"{self.scheme}://{self.host}{self.uri}"

    @classmethod
    def from_url(cls, url: str, method: str) -> Original | None:
        """From nginx's `X-Original-URL`; None when it is not an absolute http(s) URL, or holds a
        fragment: nginx passes a raw `#` on, which `urlsplit` would cut off before the path is
        checked (`/static/x#/../../admin` was a public path, found by review)."""
        if "#" in url:
            return None
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            return None
        uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(method.upper()[:16] or "GET", parts.scheme, parts.netloc.lower(), uri)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer: a status, the reason (401/403), and the identity headers (200) or the sign-in
    address (302)."""

    status: int
    detail: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    location: str | None = None


UNKNOWN_SITE = "This host is not one wardgate protects (FORWARD_AUTH_FILE)."
NOT_ALLOWED = "Your account may not use this site."
KEYS_REFUSED = "API keys are not accepted on this site; sign in instead."


def decide(
    config: ForwardAuth,
    original: Original | None,
    caller: Caller | None,
    *,
    refusal: Decision | None = None,
    sign_in: str | None = None,
    redirect: bool = False,
) -> Decision:
    """The decision for `original`, asked by `caller` (None: no valid credential; `refusal` is why).

    Without a valid credential: 302 to `sign_in` when `redirect` (a browser, in forward-auth mode),
    else 401 with the same address in `Location` (nginx's mode: nginx redirects with it).
    """
    site = config.site_for(original.host) if original is not None else None
    if original is None or site is None:
        return Decision(403, UNKNOWN_SITE)
    if site.is_public(original.path):  # empty identity headers: the proxy overwrites forged ones
        return Decision(200, headers=tuple((name.encode("ascii"), b"") for name in config.headers.values()))
    if refusal is not None and refusal.status != 401:  # a credential that may not be used: no retry
        return refusal
    if caller is None:
        back = f"{sign_in}?redirect={quote(original.url, safe='')}" if sign_in else None
        if redirect and back:
            return Decision(302, location=back)
        # nginx's mode: a 401 that names the sign-in page, for `error_page 401 =302` to use.
        return Decision(401, refusal.detail if refusal else "Not authenticated.", location=back)
    return _admit(site, original, caller, config.headers)


def _admit(site: Site, original: Original, caller: Caller, names: Mapping[str, str]) -> Decision:
    user = caller.user
    if isinstance(caller, KeyPrincipal):
        if not site.api_keys:
            return Decision(403, KEYS_REFUSED)
        if not caller.may_reach(UPSTREAM_NAME, original.path):
            return Decision(403, "This API key may not be used for this path.")
    if user.role == Role.PENDING:
        return Decision(403, "Your account is waiting for approval by an administrator.")
    if not all(rule.admits(user.role, user.groups) for rule in site.rules_for(original.path)):
        return Decision(403, NOT_ALLOWED)
    values = {
        "user": _header_value(user.email),
        "email": _header_value(user.email),
        "name": _header_value(user.name),
        # Each name encoded on its own, a comma in it too: "eng,admins" stays one group.
        "groups": b",".join(_header_value(g, keep=_KEPT.replace(",", "")) for g in user.groups),
        "role": _header_value(user.role.value),
    }
    headers = tuple((names[key].encode("ascii"), value) for key, value in values.items())
    return Decision(200, headers=headers)


def _header_value(value: str, keep: str = _KEPT) -> bytes:
    """ASCII as it is; anything else percent-encoded as UTF-8 (as the built-in proxy's identity
    headers, Open WebUI's convention), so no proxy or app has to guess a header's charset."""
    return quote(_UNSAFE.sub("", value), safe=keep).encode("ascii")
