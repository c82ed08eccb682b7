"""Reading provider claims: dotted paths, lists or delimited strings, role and group rules, and the
one exact form in which an address is matched.

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
from wardgate.identity.validation import exact_address as exact_address  # matched as accounts are

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


def address_domain(address: str) -> str:
    """The domain of an address `exact_address` returned."""
    return address.rpartition("@")[2]


def is_true(value: Any) -> bool:
    """A boolean claim: JSON true, or the string "true" some providers send (AWS Cognito)."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


# RFC 8176 authentication method references that are a second factor (or say there were several);
# "pwd", "pin" and "kba" alone are not, nor is a provider's own session ("sso" is no RFC 8176 value).
SECOND_FACTOR_AMR = frozenset(
    {"mfa", "otp", "hwk", "swk", "sc", "fpt", "face", "iris", "retina", "vbm", "sms", "tel"}
)


def shows_second_factor(claims: Mapping[str, Any], acr_values: Iterable[str]) -> bool:
    """Whether the ID token says the person showed a second factor at the provider: an `amr` value
    of RFC 8176 that is one (OIDC Core §2), or an `acr` the deployment lists (OAUTH_MFA_ACR_VALUES)."""
    amr = claims.get("amr")
    if isinstance(amr, list) and any(isinstance(v, str) and v.lower() in SECOND_FACTOR_AMR for v in amr):
        return True
    acr = claims.get("acr")
    return isinstance(acr, str) and acr in set(acr_values)
