"""Admission to an upstream: who may reach which service behind wardgate, decided in one place.

Pending and disabled users reach nothing; each upstream lists the roles (and optionally groups) it
admits; an API key can be narrowed further by its scopes and `API_KEYS_ALLOWED_ENDPOINTS`. The relay
asks at the start of every request and of every WebSocket.
"""

from __future__ import annotations

from wardgate.errors import PermissionDeniedError
from wardgate.identity.authentication import Caller
from wardgate.identity.rules import require_approved
from wardgate.proxy.upstreams import Upstream


def admit(caller: Caller, upstream: Upstream, path: str) -> None:
    """Return if `caller` may reach `path` on `upstream`; PermissionDeniedError (403) otherwise."""
    user = caller.user
    require_approved(user)
    if not upstream.admits(user.role, user.groups):
        raise PermissionDeniedError(
            f"Your account may not use the {upstream.name} service.", code="upstream_denied"
        )
    if not caller.may_reach(upstream.name, path):
        raise PermissionDeniedError("This API key may not be used for this path.", code="api_key_scope")
