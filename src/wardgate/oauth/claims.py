"""Reading provider claims: dotted paths, lists or delimited strings, role and group rules.

Real identity providers put roles and groups in different shapes (Open WebUI issues #15551, #16635):
Keycloak nests them (`realm_access.roles`), some send a JSON array, others one delimited string, a
few a single number. Everything here is pure and total: a missing or odd-shaped claim reads as "no
values", never as an exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from wardgate.config.values import Role

_MISSING = object()


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), else the flat key `path`, else None."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            node = _MISSING
            break
        node = node[part]
    if node is _MISSING:
        node = claims.get(path, None)  # a flat key that contains dots (some IdPs use URLs as names)
    return node


def claim_values(value: Any, separator: str) -> list[str] | None:
    """A claim as a list of strings: arrays as they are, strings split on `separator`.

    None when the claim is absent or has no usable shape, so callers can tell "the provider said
    nothing" from "the provider said: no values".
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return [item.strip() for item in value.split(separator) if item.strip()]
    if isinstance(value, int | float):
        return [str(value)]
    if isinstance(value, Sequence):
        return [str(item).strip() for item in value if isinstance(item, str | int) and str(item).strip()]
    return None


def mapped_role(values: Iterable[str], allowed: Sequence[str], admin: Sequence[str]) -> Role | None:
    """`admin` if any value is an admin role, `user` if any is allowed (`*`: any), else None."""
    found = set(values)
    if found & set(admin):
        return Role.ADMIN
    if "*" in allowed or found & set(allowed):
        return Role.USER
    return None


def first_blocked(groups: Iterable[str], patterns: Sequence[str]) -> str | None:
    """The first group matching a blocked entry (exact name or `*`/`?` wildcard), else None."""
    for group in groups:
        if any(group == pattern or fnmatchcase(group, pattern) for pattern in patterns):
            return group
    return None


def email_domain(email: str) -> str:
    """The lower-cased part after the last `@`."""
    return email.rsplit("@", 1)[-1].lower()


def is_true(value: Any) -> bool:
    """A boolean claim: JSON true, or the string "true" some providers send (AWS Cognito)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")
