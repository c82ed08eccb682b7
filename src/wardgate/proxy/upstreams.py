"""Upstream routing and access rules (pure: no I/O, no web framework).

`/ollama/...` goes to `OLLAMA_BASE_URL`, `/openai/...` to `OPENAI_API_BASE_URL` (with `OPENAI_API_KEY`
added server-side), and every other path wardgate does not own to `UPSTREAM_URL`. Each can be off.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

# RFC 9110 §7.6.1: connection-specific fields are not forwarded (plus those listed in Connection).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set again by wardgate for the upstream; never believed from the client.
FORWARDING = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """One service behind wardgate."""

    name: str  # "ollama", "openai" or "app"
    base_url: str
    mount: str  # path prefix on wardgate ("" for the app: everything else)
    allowed_roles: frozenset[str] = frozenset({"user", "admin"})
    allowed_groups: frozenset[str] = frozenset()  # empty: any group
    inject_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a secret
    strips_authorization: bool = True  # model APIs never see the client's Authorization

    def target(self, path: str, query: str) -> str:
        """The upstream URL for a decoded request path (already known to belong to this upstream).

        Every `%` is escaped again: the path was decoded once by the server, and the upstream decodes
        once more, so it sees the very path the access rules saw (`%252e` stays `%2e`, never `.`).
        """
        rest = path[len(self.mount) :] if self.mount else path
        url = self.base_url.rstrip("/") + "/" + quote(rest.lstrip("/"), safe="/:@!$&'()*+,;=-._~")
        return f"{url}?{query}" if query else url

    def admits(self, role: str, groups: Collection[str]) -> bool:
        """Access rule: the role must be allowed, and if groups are listed, one of them must match."""
        if role not in self.allowed_roles:
            return False
        return not self.allowed_groups or bool(self.allowed_groups.intersection(groups))


@dataclass(frozen=True)
class UpstreamTable:
    """Which upstream serves which path."""

    upstreams: Sequence[Upstream] = field(default_factory=tuple)

    def route(self, path: str) -> Upstream | None:
        """The upstream for `path`: a mounted one by prefix (segment boundary), else the app, else None."""
        app = None
        for upstream in self.upstreams:
            if not upstream.mount:
                app = upstream
            elif path == upstream.mount or path.startswith(upstream.mount + "/"):
                return upstream
        return app

    @property
    def has_app(self) -> bool:
        """True when an app upstream takes every path wardgate does not own."""
        return any(not u.mount for u in self.upstreams)


def check_upstream_url(url: str) -> str | None:
    """A problem with an upstream base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an absolute http(s) URL such as http://127.0.0.1:11434"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "must not contain a query, a fragment or credentials"
    return None


def parse_list(value: str) -> frozenset[str]:
    """A comma-separated list (blank entries ignored)."""
    return frozenset(item.strip() for item in value.split(",") if item.strip())
