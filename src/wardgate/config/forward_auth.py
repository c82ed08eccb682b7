"""The sites wardgate guards for a reverse proxy (forward auth): `FORWARD_AUTH_FILE`, read once at start.

A TOML file; anything in it that is not understood stops start-up (naming the variable and the
problem), since a misspelled rule must never quietly become "no rule":

```toml
[headers]                        # names of the identity headers of a 200 (these are the defaults)
user = "Remote-User"             # the account's email: what people sign in with
email = "Remote-Email"
name = "Remote-Name"
groups = "Remote-Groups"         # comma-separated
role = "Remote-Role"

[[sites]]
host = "chat.example.com"        # an exact host, or "*.apps.example.com" for its subdomains
roles = ["user", "admin"]        # who may enter (the default); pending accounts never do
groups = []                      # or, when given, members of one of these groups (and a listed role)
public = ["/health", "/static/"] # path prefixes anyone may reach, signed in or not
api_keys = false                 # whether API keys (sk-…) are accepted here

[[sites.paths]]                  # stricter (or other) rules under a path prefix: the longest wins
prefix = "/admin"
roles = ["admin"]
```

The host list is also the list of places a sign-in may send the browser back to, so the redirect
after sign-in is never open.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wardgate.config.toml_files import only_keys, read_toml
from wardgate.config.values import ROLE_NAMES, Role, is_plain_path

MAX_SITES = 256
MAX_PREFIXES = 64
_HOST = re.compile(
    r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:\d{1,5})?"
)
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")
DEFAULT_HEADERS = {
    "user": "Remote-User",
    "email": "Remote-Email",
    "name": "Remote-Name",
    "groups": "Remote-Groups",
    "role": "Remote-Role",
}


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may enter: a listed role and, when groups are listed, membership of one of them."""

    roles: frozenset[Role]
    groups: frozenset[str] = frozenset()

    def admits(self, role: Role, groups: tuple[str, ...]) -> bool:
        """Whether a person of `role` in `groups` may enter."""
        if role == Role.PENDING or role not in self.roles:
            return False
        return not self.groups or not self.groups.isdisjoint(groups)


@dataclass(frozen=True, slots=True)
class Site:
    """One protected host: its rule, stricter rules under path prefixes, its public paths."""

    host: str  # lower case; "*.example.com" covers the subdomains of example.com
    rule: Rule
    paths: tuple[tuple[str, Rule], ...] = ()  # longest prefix first
    public: tuple[str, ...] = ()
    api_keys: bool = False

    def covers(self, host: str) -> bool:
        """Whether `host` (lower case, with or without a port) is this site; a site named without a
        port is that host on any port."""
        if ":" not in self.host:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host

    def is_public(self, path: str) -> bool:
        """Whether `path` is under a public prefix, exactly as written. Only a plain path can be:
        an app may read another path into one with dot segments, percent-encoding, `//`, or
        `;` parameters (`/static/..;/admin` is `/admin` to Tomcat and Spring)."""
        return is_plain_path(path) and any(_within(path, prefix) for prefix in self.public)

    def rules_for(self, path: str) -> tuple[Rule, ...]:
        """The rules a request for `path` must pass: the longest matching prefix's, else the site's.
        Prefixes match whatever the case (`/ADMIN` is `/admin` to IIS); a path that is not plain must
        pass every rule of the site, since it may be read as any of them."""
        if not is_plain_path(path):
            return (self.rule, *(rule for _, rule in self.paths))
        lowered = path.lower()
        for prefix, rule in self.paths:
            if _within(lowered, prefix.lower()):
                return (rule,)
        return (self.rule,)


@dataclass(frozen=True, slots=True)
class ForwardAuth:
    """The configured sites and header names; no sites means forward auth is off."""

    sites: tuple[Site, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_HEADERS))

    def site_for(self, host: str) -> Site | None:
        """The site serving `host`: an exact host before a wildcard."""
        host = host.lower()
        exact = next((s for s in self.sites if not s.host.startswith("*.") and s.covers(host)), None)
        return exact or next((s for s in self.sites if s.covers(host)), None)


def _within(path: str, prefix: str) -> bool:
    base = prefix.rstrip("/")
    return path == base or path.startswith(base + "/") or (prefix.endswith("/") and path.startswith(prefix))


def load_forward_auth(path_text: str) -> ForwardAuth:
    """Read and check the file; ValueError naming what is wrong (the variable is named by the caller)."""
    document = read_toml(path_text)
    try:
        return _parse(document)
    except ValueError as exc:
        raise ValueError(f"{path_text!r}: {exc}") from None


def _parse(document: Mapping[str, Any]) -> ForwardAuth:
    only_keys(document, {"headers", "sites"}, "the file")
    headers = document.get("headers", {})
    if not isinstance(headers, dict):
        raise ValueError("[headers] must be a table")
    only_keys(headers, set(DEFAULT_HEADERS), "[headers]")
    for value in headers.values():
        if not isinstance(value, str) or not _HEADER.fullmatch(value):
            raise ValueError(f"header name {str(value)[:40]!r} must be 1 to 64 letters, digits or '-'")
    names = {**DEFAULT_HEADERS, **headers}
    if len({n.lower() for n in names.values()}) != len(names):
        raise ValueError("the header names must differ from each other")
    sites = document.get("sites", [])
    if not isinstance(sites, list) or not sites or len(sites) > MAX_SITES:
        raise ValueError(f"[[sites]] must list 1 to {MAX_SITES} sites")
    parsed = tuple(_site(s) for s in sites)
    hosts = [s.host for s in parsed]
    if len(set(hosts)) != len(hosts):
        raise ValueError("a host is listed twice in [[sites]]")
    return ForwardAuth(parsed, names)


def _site(value: object) -> Site:
    if not isinstance(value, dict):
        raise ValueError("each [[sites]] entry must be a table")
    only_keys(value, {"host", "roles", "groups", "public", "api_keys", "paths"}, "[[sites]]")
    host = value.get("host")
    if not isinstance(host, str) or not _HOST.fullmatch(host.lower()) or len(host) > 253:
        raise ValueError(
            f"host {str(host)[:60]!r} must be a host name such as chat.example.com or *.example.com"
        )
    api_keys = value.get("api_keys", False)
    if not isinstance(api_keys, bool):
        raise ValueError("api_keys must be true or false")
    paths = value.get("paths", [])
    if not isinstance(paths, list) or len(paths) > MAX_PREFIXES:
        raise ValueError(f"[[sites.paths]] must list at most {MAX_PREFIXES} rules")
    rules = []
    for entry in paths:
        if not isinstance(entry, dict):
            raise ValueError("each [[sites.paths]] entry must be a table")
        only_keys(entry, {"prefix", "roles", "groups"}, "[[sites.paths]]")
        rules.append((_prefix(entry.get("prefix")), _rule(entry)))
    return Site(
        host=host.lower(),
        rule=_rule(value),
        paths=tuple(sorted(rules, key=lambda r: len(r[0]), reverse=True)),
        public=tuple(_prefix(p) for p in _list(value.get("public", []), "public")),
        api_keys=api_keys,
    )


def _rule(table: Mapping[str, Any]) -> Rule:
    roles = _list(table.get("roles", ["user", "admin"]), "roles")
    unknown = [r for r in roles if r not in ROLE_NAMES or r == Role.PENDING.value]
    if unknown:
        raise ValueError(f"unknown role {unknown[0][:20]!r}; expected user or admin")
    groups = _list(table.get("groups", []), "groups")
    if any(not g or len(g) > 255 for g in groups):
        raise ValueError("a group name must be 1 to 255 characters")
    return Rule(frozenset(Role(r) for r in roles), frozenset(groups))


def _prefix(value: object) -> str:
    if not isinstance(value, str) or len(value) > 1024 or not is_plain_path(value):
        raise ValueError(f"path prefix {str(value)[:60]!r} must be a plain path such as /admin")
    return value


def _list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_PREFIXES or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of at most {MAX_PREFIXES} strings")
    return list(value)
