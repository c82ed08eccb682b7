"""What a role allows, and the words wardgate uses when it refuses: each rule written once.

Every place that admits a person (wardgate's own API and pages, the relay to upstreams, API keys)
asks these functions, so a pending account meets the same refusal everywhere.
"""

from __future__ import annotations

from wardgate.config.values import Role
from wardgate.errors import BadRequestError, PermissionDeniedError
from wardgate.sessions.records import UserState

PENDING_APPROVAL = "Your account is pending approval by an administrator."
ADMIN_REQUIRED = "Administrator access is required."
ACCOUNT_DISABLED = "This account is disabled. Contact an administrator."
INVALID_CREDENTIALS = (
    "The email or password provided is incorrect. Please check for typos and try signing in again."
)
INVALID_ROLE = f"Role must be one of {', '.join(role.value for role in Role)}."


def require_approved(user: UserState) -> None:
    """A user or admin: pending accounts reach nothing but their own sessions (403)."""
    if user.role == Role.PENDING:
        raise PermissionDeniedError(PENDING_APPROVAL, code="pending_approval")


def require_admin(user: UserState) -> None:
    """An admin (403 otherwise)."""
    if user.role != Role.ADMIN:
        raise PermissionDeniedError(ADMIN_REQUIRED, code="admin_required")


def role_named(name: str) -> Role:
    """The role with this name, or 400 naming the roles there are."""
    try:
        return Role(name)
    except ValueError:
        raise BadRequestError(INVALID_ROLE, code="invalid_role") from None
