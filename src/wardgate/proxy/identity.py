"""What the upstream is told: the client's headers, cleaned, plus who is signed in.

The upstream learns the signed-in person through headers (Open WebUI's trusted-header mode). Any such
header sent by the client is removed first, always, and so are Open WebUI's forwarded-user headers
(`X-OpenWebUI-User-*`, read only from a service key's call: `wardgate.proxy.acting`); so are
hop-by-hop and forwarding headers (set again by wardgate), the client's framing (the upstream
client frames the body itself), method overrides (`X-HTTP-Method-Override`: the method is the one
the rules saw), wardgate's own credentials (the `token` cookie, a wardgate `Authorization` value,
the API-key header), and any `Set-Cookie` from the upstream that would overwrite wardgate's session
cookie.

Names are compared as a WSGI or CGI application reads them: `X_Forwarded_Email` is
`HTTP_X_FORWARDED_EMAIL` there, the same variable as `X-Forwarded-Email`, so a client header whose
name matches a protected one with `_` read as `-` is removed too. And by default every client header
with `_` in its name is dropped, as nginx does (`underscores_in_headers off`):
`FORWARD_UNDERSCORE_HEADERS=true` passes the others on.

Answers: the upstream's `Access-Control-*` headers are removed. wardgate's own CORS policy
(`CORS_ALLOW_ORIGIN`) answers for proxied paths too, so an upstream that reflects any origin with
credentials (Open WebUI's default) cannot hand a foreign site data read with wardgate's cookie.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from wardgate.errors import BadRequestError
from wardgate.identity.authentication import TOKEN_COOKIE, Caller
from wardgate.proxy.acting import ForwardedUser
from wardgate.proxy.upstreams import FORWARDING, HOP_BY_HOP, Upstream

_FRAMING = frozenset({"content-length", "transfer-encoding"})
# The method is the one the rules saw: a server (or framework) that honoured one of these would turn
# an allowed GET into a DELETE.
_METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
# `token`, and the nameless cookie a browser sends back as a bare value: `=token=x` would come back
# as `token=x`, a second session cookie next to wardgate's own.
_NOT_SETTABLE = frozenset({TOKEN_COOKIE.encode(), b""})


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    """Names of the headers that tell the upstream who is signed in (Open WebUI's trusted-header mode)."""

    email: str
    name: str
    groups: str
    role: str

    @property
    def names(self) -> frozenset[str]:
        """The names in use, lower-cased."""
        return frozenset(h.lower() for h in (self.email, self.name, self.groups, self.role) if h)

    def values(self, principal: Caller) -> list[tuple[str, str]]:
        """The headers for this user; the name is URL-encoded as Open WebUI expects (non-ASCII safe)."""
        user = principal.user
        pairs = [
            (self.email, user.email),
            (self.name, quote(user.name, safe=" ")),
            (self.role, user.role),
            (self.groups, ",".join(getattr(user, "groups", ()))),
        ]
        return [(name, value) for name, value in pairs if name]


def _as_cgi(name: str) -> str:
    """A lower-case header name as a CGI variable would spell it, with `-` for `_`."""
    return name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class ForwardingRules:
    """What leaves for an upstream: identity header names, the API-key header, the underscore rule."""

    identity: IdentityHeaders
    api_key_header: str
    forward_underscores: bool = False  # FORWARD_UNDERSCORE_HEADERS
    forwarded: ForwardedUser = field(default_factory=ForwardedUser)
    """Open WebUI's forwarded-user headers: read from a service key's calls, sent to no upstream."""
    protected: frozenset[str] = field(init=False, repr=False)
    """Names no client may send to an upstream in any spelling (compared after `_as_cgi`)."""
    dropped: frozenset[str] = field(init=False, repr=False)
    """Names never passed on as the client sent them, whatever the request (lower-case)."""
    dropped_with_authorization: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:  # once, not per request
        names = self.identity.names | self.forwarded.names | FORWARDING | _METHOD_OVERRIDES
        names |= {self.api_key_header.lower()}
        object.__setattr__(self, "protected", frozenset(_as_cgi(n) for n in names))
        # `Expect: 100-continue` was answered to the client; the framing is set again by the upstream
        # client from the body it sends; Open WebUI's forwarded-user headers go from everyone (a
        # service key's were read already, `wardgate.proxy.acting`): the upstream learns the person
        # from the identity headers.
        dropped = HOP_BY_HOP | names | _FRAMING | {"host", "expect"}
        object.__setattr__(self, "dropped", dropped)
        object.__setattr__(self, "dropped_with_authorization", dropped | {"authorization"})

    def refuses(self, name: str) -> bool:
        """Whether a client header (lower-case name) must not reach the upstream on these grounds."""
        if "_" not in name:
            return False
        if not self.forward_underscores:
            return True
        spelled = _as_cgi(name)
        return spelled in self.protected or spelled.startswith("x-forwarded-")


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(","))
    return tokens


def _without_wardgate_cookie(cookie_header: str) -> str:
    """The header minus every `token` pair, split as authentication splits it (Starlette's
    `cookie_parser`: on `;`, names trimmed); the app's own pairs pass byte for byte."""
    kept = [pair for pair in cookie_header.split(";") if pair.partition("=")[0].strip() != TOKEN_COOKIE]
    return ";".join(kept).strip(" ;")


def upstream_request_headers(
    scope: Mapping[str, Any],
    principal: Caller,
    upstream: Upstream,
    rules: ForwardingRules,
    is_ours: Callable[[str], bool],
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, forwarding, identity and wardgate's credentials; plus ours.

    `scope` is the request's ASGI scope (its `headers`, `client` and `scheme`), as resolved by the
    trusted-proxy layer.
    """
    try:
        raw = [(k.decode("latin-1").lower(), v.decode("utf-8")) for k, v in scope["headers"]]
    except UnicodeDecodeError:  # the upstream clients send UTF-8; other bytes would arrive altered
        raise BadRequestError("Header values must be ASCII or UTF-8.", code="header_encoding") from None
    # The first value counts, as with Starlette's Headers.get().
    first: dict[str, str] = {}
    for name, value in raw:
        first.setdefault(name, value)
    authorizations = [value for name, value in raw if name == "authorization"]
    if upstream.strips_authorization or principal.via != "cookie" or any(map(is_ours, authorizations)):
        dropped = rules.dropped_with_authorization  # wardgate's credential, or meant for a model API
    else:
        dropped = rules.dropped
    if "connection" in first:
        dropped = dropped | _connection_tokens(raw)
    headers: list[tuple[str, str]] = []
    for name, value in raw:
        if name in dropped or rules.refuses(name):
            continue
        if name == "cookie":
            value = _without_wardgate_cookie(value)
            if not value:
                continue
        headers.append((name, value))
    client = scope.get("client")
    headers += [
        ("X-Forwarded-For", client[0] if client else ""),
        ("X-Forwarded-Proto", scope.get("scheme", "http")),
        ("X-Forwarded-Host", first.get("host", "")),
    ]
    headers += rules.identity.values(principal)
    headers += list(upstream.inject_headers)
    return headers


def response_headers(raw: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones, its CORS answer (wardgate's policy answers for
    proxied paths) and any attempt to set wardgate's session cookie."""
    lowered = [(name.lower(), value) for name, value in raw]
    dropped = set(_HOP_BY_HOP_BYTES) | {b"date"}  # the server adds its own Date; two are invalid
    for name, value in lowered:
        if name == b"connection":
            dropped.update(token.strip().lower() for token in value.split(b","))
    return [
        (name, value)
        for name, value in lowered
        if name not in dropped
        and not name.startswith(b"access-control-")
        and not (name == b"set-cookie" and _cookie_name(value) in _NOT_SETTABLE)
    ]


def _cookie_name(set_cookie: bytes) -> bytes:
    """The name a browser gives the cookie (RFC 6265bis §5.6): trimmed, and empty without `=`."""
    pair = set_cookie.split(b";", 1)[0]
    return pair.split(b"=", 1)[0].strip() if b"=" in pair else b""
