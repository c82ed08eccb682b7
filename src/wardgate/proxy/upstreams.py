"""Upstream routing and access rules (pure: no I/O, no web framework).

`/ollama/...` goes to `OLLAMA_BASE_URL`, `/openai/...` to `OPENAI_API_BASE_URL` (with `OPENAI_API_KEY`
added server-side), and every other path wardgate does not own to `UPSTREAM_URL`. Each can be off.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from wardgate.config.settings import Settings
from wardgate.config.values import Role

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
    allowed_roles: frozenset[Role]
    allowed_groups: frozenset[str]  # empty: any group
    inject_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a secret
    strips_authorization: bool = True  # model APIs never see the client's Authorization

    def target(self, path: str, query: str) -> str:
        """The upstream URL for a decoded request path (already known to belong to this upstream).

        Every `%` is escaped again: the path was decoded once by the server, and the upstream decodes
        once more, so it sees the very path the access rules saw (`%252e` stays `%2e`, never `.`).
        """
        rest = path[len(self.mount) :] if self.mount else path
        url = self.base_url.rstrip("/") + "/" + quote(rest.removeprefix("/"), safe="/:@!$&'()*+,;=-._~")
        return f"{url}?{query}" if query else url

    def admits(self, role: Role, groups: Collection[str]) -> bool:
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


def upstreams_from_settings(s: Settings) -> UpstreamTable:
    """The configured upstreams: Ollama at /ollama, OpenAI-compatible at /openai, the app elsewhere."""
    table: list[Upstream] = []
    if s.ollama_base_url:
        table.append(
            Upstream("ollama", s.ollama_base_url, "/ollama", s.ollama_allowed_roles, s.ollama_allowed_groups)
        )
    if s.openai_api_base_url:
        key = s.openai_api_key
        inject = (("Authorization", f"Bearer {key.get_secret_value()}"),) if key else ()
        table.append(
            Upstream(
                "openai",
                s.openai_api_base_url,
                "/openai",
                s.openai_allowed_roles,
                s.openai_allowed_groups,
                inject,
            )
        )
    if s.upstream_url:
        table.append(
            Upstream(
                "app",
                s.upstream_url,
                "",
                s.upstream_allowed_roles,
                s.upstream_allowed_groups,
                strips_authorization=False,
            )
        )
    return UpstreamTable(tuple(table))
