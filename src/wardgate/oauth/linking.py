"""The one account-linking chokepoint: a provider identity in, a wardgate account out (or a refusal).

An identity is keyed by (issuer, subject) — OIDC Core §5.7: `sub` is unique only within its issuer,
and neither `email` nor `preferred_username` is a stable identifier. `link_identity` decides, in this
order, for every sign-in:

1. admission: the verified email's domain must be in `OAUTH_ALLOWED_DOMAINS` (exact match), no group
   may match `OAUTH_BLOCKED_GROUPS`, and with role management the role claim must grant a role;
2. the account: the identity's linked account; else, only with `OAUTH_MERGE_ACCOUNTS_BY_EMAIL=true`
   and an email the provider asserts is verified, the account with that email — never an admin
   account, never one already linked to another identity of the same issuer (Open WebUI merges on
   unverified emails); else a new account when `ENABLE_OAUTH_SIGNUP=true`
   (`AccountService.create_user`, so "the first account is the admin" stays atomic);
3. the role (role management: re-applied at every sign-in) and the groups (stored on the user).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.config.values import Role
from wardgate.errors import BadRequestError, PermissionDeniedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.oauth.claims import claim_at, claim_values, email_domain, first_blocked, mapped_role
from wardgate.sessions.records import UserState
from wardgate.storage.models import OAuthIdentity, UserGroup

log = logging.getLogger(__name__)

DOMAIN_NOT_ALLOWED = "Sign-in is limited to approved email domains, and yours is not one of them."
DOMAIN_UNVERIFIED = (
    "This site accepts only approved email domains, and your sign-in provider has not verified your "
    "email address."
)
GROUP_BLOCKED = "Your group membership at the sign-in provider does not allow access to this site."
ROLE_NOT_ALLOWED = "Your account at the sign-in provider has no role that allows access to this site."
SIGNUP_DISABLED = (
    "No account is linked to this sign-in, and this site does not create accounts through single "
    "sign-on. Ask an administrator for an account."
)
NO_EMAIL = "The sign-in provider did not share an email address, which this site needs for a new account."
EMAIL_TAKEN = "An account with this email address already exists. Sign in with your password instead."
MERGE_UNVERIFIED = (
    "An account with this email address already exists, and your sign-in provider has not verified the "
    "address, so the two cannot be linked."
)
MERGE_ADMIN = (
    "An account with this email address already exists and is an administrator account, which is never "
    "linked to single sign-on automatically."
)
MERGE_TAKEN = "An account with this email address is already linked to another identity at this provider."


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    """Who the provider says signed in: verified claims only (ID token, userinfo, GitHub's APIs)."""

    provider: str
    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    """The linking rules, from `ENABLE_OAUTH_SIGNUP`, `OAUTH_MERGE_ACCOUNTS_BY_EMAIL` and friends."""

    signup: bool = False
    merge_by_email: bool = False
    allowed_domains: frozenset[str] | None = None  # None: any domain
    role_management: bool = False
    roles_claim: str = "roles"
    roles_separator: str = ","
    allowed_roles: tuple[str, ...] = ("user", "admin")
    admin_roles: tuple[str, ...] = ("admin",)
    group_management: bool = False
    groups_claim: str = "groups"
    groups_separator: str = ";"
    blocked_groups: tuple[str, ...] = ()


def link_identity(
    identity: ProviderIdentity,
    policy: LinkPolicy,
    accounts: AccountService,
    sessions: sessionmaker[Session],
) -> UserState:
    """The account this identity signs in to, created or linked as the policy allows; else a refusal.

    Raises PermissionDeniedError / BadRequestError whose message is shown to the user as it is.
    """
    _check_domain(identity, policy)
    groups = claim_values(claim_at(identity.claims, policy.groups_claim), policy.groups_separator)
    if policy.blocked_groups and first_blocked(groups or [], policy.blocked_groups) is not None:
        raise PermissionDeniedError(GROUP_BLOCKED, code="oauth_group_blocked")
    role = _claimed_role(identity, policy)
    user_id = _linked_user_id(identity, sessions)
    if user_id is None:
        user_id = _merge_or_create(identity, policy, role, accounts, sessions)
    user = UserState.from_row(accounts.get_user(user_id))
    if not user.active:
        raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
    if role is not None and role != user.role:
        user = _apply_role(accounts, user, role)
    if policy.group_management and groups is not None:
        user = accounts.set_groups(user.id, groups)
    return user


def _check_domain(identity: ProviderIdentity, policy: LinkPolicy) -> None:
    if policy.allowed_domains is None:
        return
    if not identity.email or not identity.email_verified:
        raise PermissionDeniedError(DOMAIN_UNVERIFIED, code="oauth_domain_unverified")
    domain = email_domain(identity.email)
    if domain not in policy.allowed_domains:
        raise PermissionDeniedError(DOMAIN_NOT_ALLOWED, code="oauth_domain")


def _claimed_role(identity: ProviderIdentity, policy: LinkPolicy) -> Role | None:
    """The role the claims grant (role management on), else None; refuse when they grant none."""
    if not policy.role_management:
        return None
    values = claim_values(claim_at(identity.claims, policy.roles_claim), policy.roles_separator) or []
    role = mapped_role(values, policy.allowed_roles, policy.admin_roles)
    if role is None:
        raise PermissionDeniedError(ROLE_NOT_ALLOWED, code="oauth_role")
    return role


def _linked_user_id(identity: ProviderIdentity, sessions: sessionmaker[Session]) -> str | None:
    """The account linked to (issuer, subject); records the sign-in on the identity."""
    with sessions() as db, db.begin():
        row = db.scalar(
            select(OAuthIdentity).where(
                OAuthIdentity.issuer == identity.issuer, OAuthIdentity.subject == identity.subject
            )
        )
        if row is None:
            return None
        row.last_login_at = int(time.time())
        row.email, row.email_verified = identity.email, identity.email_verified
        return row.user_id


def _merge_or_create(
    identity: ProviderIdentity,
    policy: LinkPolicy,
    role: Role | None,
    accounts: AccountService,
    sessions: sessionmaker[Session],
) -> str:
    existing = accounts.find_by_email(identity.email) if identity.email else None
    if existing is not None:
        _check_merge(identity, policy, existing.id, existing.role, sessions)
        user_id = existing.id
    elif not policy.signup:
        raise PermissionDeniedError(SIGNUP_DISABLED, code="oauth_signup_disabled")
    elif not identity.email:
        raise BadRequestError(NO_EMAIL, code="oauth_no_email")
    else:
        name = _display_name(identity)
        try:
            user_id = accounts.create_user(name, identity.email, None, role=role).id
        except BadRequestError as exc:
            if exc.code != "email_taken":
                raise
            raise BadRequestError(EMAIL_TAKEN, code="email_taken") from None
    return _insert_identity(identity, user_id, sessions)


def _check_merge(
    identity: ProviderIdentity, policy: LinkPolicy, user_id: str, role: str, sessions: sessionmaker[Session]
) -> None:
    """Linking by email: only when allowed, verified, not an admin, not already bound at this issuer."""
    if not policy.merge_by_email:
        raise BadRequestError(EMAIL_TAKEN, code="email_taken")
    if not identity.email_verified:
        raise PermissionDeniedError(MERGE_UNVERIFIED, code="oauth_unverified_email")
    if role == Role.ADMIN:
        raise PermissionDeniedError(MERGE_ADMIN, code="oauth_admin_merge")
    with sessions() as db:
        bound = db.scalar(
            select(OAuthIdentity.id).where(
                OAuthIdentity.user_id == user_id, OAuthIdentity.issuer == identity.issuer
            )
        )
    if bound is not None:
        raise PermissionDeniedError(MERGE_TAKEN, code="oauth_already_linked")
    log.info("linking a %s identity to an existing account by its verified email", identity.provider)


def _insert_identity(identity: ProviderIdentity, user_id: str, sessions: sessionmaker[Session]) -> str:
    """Bind (issuer, subject) to `user_id`; if a concurrent sign-in bound it first, use that binding."""
    now = int(time.time())
    try:
        with sessions() as db, db.begin():
            db.add(
                OAuthIdentity(
                    id=str(uuid.uuid4()),
                    provider=identity.provider,
                    issuer=identity.issuer,
                    subject=identity.subject,
                    user_id=user_id,
                    email=identity.email,
                    email_verified=identity.email_verified,
                    created_at=now,
                    last_login_at=now,
                )
            )
    except IntegrityError:
        winner = _linked_user_id(identity, sessions)
        if winner is None:
            raise
        return winner
    return user_id


def _display_name(identity: ProviderIdentity) -> str:
    """The provider's name claim made printable, else the email's local part."""
    raw = identity.name or ""
    cleaned = " ".join("".join(c for c in raw if c.isprintable()).split())[:255]
    return cleaned or (identity.email or "user").split("@", 1)[0][:255] or "user"


def _apply_role(accounts: AccountService, user: UserState, role: str) -> UserState:
    """Re-apply the claimed role; the last administrator is kept (an install must keep one admin)."""
    try:
        return accounts.apply_provider_role(user.id, role)
    except BadRequestError as exc:
        if exc.code != "last_admin":
            raise
        log.warning("role claim would demote the last administrator; the admin role is kept")
        return user


def user_groups(sessions: sessionmaker[Session], user_id: str) -> list[str]:
    """The groups stored for a user, sorted."""
    with sessions() as db:
        return list(
            db.scalars(select(UserGroup.name).where(UserGroup.user_id == user_id).order_by(UserGroup.name))
        )
