"""The one account-linking chokepoint: a provider identity in, a wardgate account out (or a refusal).

An identity is keyed by (issuer, subject) — OIDC Core §5.7: `sub` is unique only within its issuer,
and neither `email` nor `preferred_username` is a stable identifier. `link_identity` decides, in this
order, for every sign-in:

1. admission: the provider must have granted every requested scope (when its token response names
   the grant), the verified address's domain must be in `OAUTH_ALLOWED_DOMAINS` (exact match), no group
   may match `OAUTH_BLOCKED_GROUPS`, and with role management the role claim must grant a role. When
   group rules are configured (blocked groups, group management, an upstream that requires groups)
   the groups claim must be there: a provider that releases groups only when asked for them (Okta,
   Keycloak, authentik, oidc-provider) sends none when the `groups` scope was edited out of the
   authorization URL, and "no claim" must not read as "member of no blocked group";
2. the account: for a link requested from the account page, the signed-in person's own account,
   while the session that asked is still live (never an identity already linked elsewhere); else the
   identity's linked account; else, only with `OAUTH_MERGE_ACCOUNTS_BY_EMAIL=true` and an address
   the provider asserts is verified, the account with that very address — only when wardgate
   itself has proof that the address is that account's (see `_check_merge`), never an admin
   account, never one already linked to another identity of the same issuer; else a new account
   when `ENABLE_OAUTH_SIGNUP=true` (`AccountService.create_user`, so "the first account is the
   admin" stays atomic);
3. an account that had a password and gains an identity ends every session and API key it had: the
   provider identity is the proof from now on, and whatever held the password before stops holding
   the account;
4. the role (role management: re-applied at every sign-in) and the groups (stored on the user; a
   missing claim never leaves old groups behind).

Addresses are matched only in their exact ASCII form (`claims.exact_address`), never folded.

One module on purpose, past the usual size: every way an identity reaches an account passes here,
so the rules and their refusals are read, reviewed and tested in one place.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.config.values import Role
from wardgate.errors import BadRequestError, PermissionDeniedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.oauth.claims import (
    address_domain,
    claim_at,
    claim_values,
    exact_address,
    first_blocked,
    mapped_role,
)
from wardgate.sessions.records import UserState
from wardgate.storage.models import AuthSession, OAuthIdentity, User, UserGroup

log = logging.getLogger(__name__)

DOMAIN_NOT_ALLOWED = "Sign-in is limited to approved email domains, and yours is not one of them."
DOMAIN_UNVERIFIED = (
    "This site accepts only approved email domains, and your sign-in provider has not verified your "
    "email address."
)
SCOPE_NARROWED = (
    "The sign-in provider granted less than this site asks for (a scope is missing), so the sign-in was "
    "refused. Please sign in again without changing what is shared."
)
GROUP_BLOCKED = "Your group membership at the sign-in provider does not allow access to this site."
GROUPS_MISSING = (
    "Your sign-in provider did not share your group membership, which this site needs to decide what "
    "you may use. Please sign in again without changing what is shared."
)
ROLE_NOT_ALLOWED = "Your account at the sign-in provider has no role that allows access to this site."
SIGNUP_DISABLED = (
    "No account is linked to this sign-in, and this site does not create accounts through single "
    "sign-on. Ask an administrator for an account."
)
NO_EMAIL = "The sign-in provider did not share an email address, which this site needs for a new account."
EMAIL_UNSUPPORTED = (
    "Your email address at the sign-in provider has characters other than plain ASCII letters, digits "
    "and punctuation, and this site matches and creates accounts only by such plain addresses."
)
EMAIL_TAKEN = (
    "An account with this email address already exists. If it is yours, sign in to it and link this "
    "sign-in provider from your account page."
)
MERGE_UNVERIFIED = (
    "An account with this email address already exists, and your sign-in provider has not verified the "
    "address, so the two cannot be linked."
)
MERGE_UNPROVEN = (
    "An account with this email address already exists, but nothing has proven that the address "
    "belongs to whoever holds it, so it is not linked automatically. If it is yours, sign in to it "
    "and link this sign-in provider from your account page."
)
MERGE_ADMIN = (
    "An account with this email address already exists and is an administrator account, which is never "
    "linked to single sign-on automatically."
)
MERGE_SECOND_FACTOR = (
    "An account with this email address already exists and is protected by a second factor, so a new "
    "sign-in provider is never linked to it automatically. If it is yours, sign in to it and link this "
    "provider from your account page."
)
MERGE_TAKEN = "An account with this email address is already linked to another identity at this provider."
IDENTITY_TAKEN = "This account at the sign-in provider is already linked to another account on this site."
LINK_TAKEN = "Your account here is already linked to another account at this sign-in provider."
LINK_OTHER_BROWSER = (
    "This link was started from another browser or session. Open your account page and press the "
    "link button there again."
)
LINK_SESSION_ENDED = (
    "The session that asked to link this sign-in provider has ended. Sign in again and link it from "
    "your account page."
)


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    """Who the provider says signed in: verified claims only (ID token, userinfo, GitHub's APIs)."""

    provider: str
    issuer: str
    subject: str
    email: str | None  # as the provider sent it (trimmed); matched only through `exact_address`
    email_verified: bool
    name: str | None
    claims: Mapping[str, Any] = field(default_factory=dict)
    missing_scopes: frozenset[str] = frozenset()  # requested, but not granted (the token response)


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
    upstream_groups: bool = False  # an upstream admits members of listed groups only
    mfa_acr_values: tuple[str, ...] = ()  # `acr` values that mean the provider asked for a second factor

    @property
    def needs_groups(self) -> bool:
        """True when a rule depends on the groups claim, so a sign-in without it is refused."""
        return self.group_management or bool(self.blocked_groups) or self.upstream_groups


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """A signed-in person's own request (from the account page) to link an identity to their account."""

    user_id: str
    session_id: str  # the session that asked: the link happens only while it is live


@dataclass(frozen=True, slots=True)
class Linked:
    """The account an identity signs in to, and whether its earlier sessions and API keys ended."""

    user: UserState
    sessions_ended: bool = False


def link_identity(
    identity: ProviderIdentity,
    policy: LinkPolicy,
    accounts: AccountService,
    sessions: sessionmaker[Session],
    *,
    request: LinkRequest | None = None,
) -> Linked:
    """The account this identity signs in to, created or linked as the policy allows; else a refusal.

    Raises PermissionDeniedError / BadRequestError whose code names a fixed message (`refusals`).
    """
    if identity.missing_scopes:  # the claims are not all there: never read as "no such claim"
        _forget_groups(identity, policy, accounts, sessions)
        raise PermissionDeniedError(SCOPE_NARROWED, code="provider_scope")
    address = exact_address(identity.email)
    _check_domain(identity, address, policy)
    groups = _claimed_groups(identity, policy, accounts, sessions)
    role = _claimed_role(identity, policy)
    known = _linked_user_id(identity, sessions) if request is None else None
    if request is not None:
        user_id, ended = _link_requested(identity, request, accounts, sessions)
    elif known is not None:
        user_id, ended = known, False
    else:
        user_id, ended = _merge_or_create(identity, address, policy, role, accounts, sessions)
    user = UserState.from_row(accounts.get_user(user_id))
    if not user.active:
        raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
    if role is not None and role != user.role:
        user = _apply_role(accounts, user, role)
    if policy.group_management:
        user = accounts.set_groups(user.id, groups or ())
    return Linked(user, ended)


def _check_domain(identity: ProviderIdentity, address: str | None, policy: LinkPolicy) -> None:
    if policy.allowed_domains is None:
        return
    if not identity.email or not identity.email_verified:
        raise PermissionDeniedError(DOMAIN_UNVERIFIED, code="oauth_domain_unverified")
    if address is None or address_domain(address) not in policy.allowed_domains:
        raise PermissionDeniedError(DOMAIN_NOT_ALLOWED, code="oauth_domain")


def _claimed_groups(
    identity: ProviderIdentity, policy: LinkPolicy, accounts: AccountService, sessions: sessionmaker[Session]
) -> list[str] | None:
    """The groups claim; refused when a group rule needs it and it is missing (its stored groups,
    if any, are forgotten first), or when a group is blocked."""
    groups = claim_values(claim_at(identity.claims, policy.groups_claim), policy.groups_separator)
    if groups is None and policy.needs_groups:
        _forget_groups(identity, policy, accounts, sessions)
        raise PermissionDeniedError(GROUPS_MISSING, code="oauth_groups_missing")
    if policy.blocked_groups and first_blocked(groups or [], policy.blocked_groups) is not None:
        raise PermissionDeniedError(GROUP_BLOCKED, code="oauth_group_blocked")
    return groups


def _forget_groups(
    identity: ProviderIdentity, policy: LinkPolicy, accounts: AccountService, sessions: sessionmaker[Session]
) -> None:
    """With group management, drop the stored groups of the identity's account: groups the provider
    no longer vouches for must not keep opening upstreams to the sessions already open."""
    if not policy.group_management:
        return
    with sessions() as db:
        user_id = db.scalar(
            select(OAuthIdentity.user_id).where(
                OAuthIdentity.issuer == identity.issuer, OAuthIdentity.subject == identity.subject
            )
        )
    if user_id is not None:
        accounts.set_groups(user_id, ())


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


def _end_password_sessions(accounts: AccountService, user_id: str) -> bool:
    """Before an identity joins an account that has a password, end every session and API key of it:
    whoever held the password (a session left open somewhere, an address nobody proved) is not shown
    to be this person. Done first, so that a failure leaves no identity joined with them still live."""
    if accounts.get_user(user_id).password_hash is None:
        return False
    accounts.revoke_all_sessions(user_id)
    return True


def _link_requested(
    identity: ProviderIdentity,
    request: LinkRequest,
    accounts: AccountService,
    sessions: sessionmaker[Session],
) -> tuple[str, bool]:
    """Link to the account of the person who asked, if the session that asked is still live; True
    when the account's earlier sessions ended."""
    now = int(time.time())
    with sessions() as db, db.begin():
        live = db.scalar(
            select(AuthSession.id).where(
                AuthSession.id == request.session_id,
                AuthSession.user_id == request.user_id,
                AuthSession.revoked_at.is_(None),
                or_(AuthSession.expires_at.is_(None), AuthSession.expires_at > now),
            )
        )
        if live is None:
            raise PermissionDeniedError(LINK_SESSION_ENDED, code="oauth_link_session_ended")
        linked = db.execute(
            select(OAuthIdentity.user_id, OAuthIdentity.subject).where(
                OAuthIdentity.issuer == identity.issuer,
                or_(OAuthIdentity.subject == identity.subject, OAuthIdentity.user_id == request.user_id),
            )
        ).all()
    for user_id, subject in linked:
        if subject == identity.subject and user_id != request.user_id:
            raise PermissionDeniedError(IDENTITY_TAKEN, code="oauth_identity_taken")
        if subject != identity.subject:
            raise PermissionDeniedError(LINK_TAKEN, code="oauth_link_taken")
    if linked:  # already this account's identity: a sign-in, nothing new
        return _linked_user_id(identity, sessions) or request.user_id, False
    ended = _end_password_sessions(accounts, request.user_id)
    user_id = _insert_identity(identity, request.user_id, sessions)
    if user_id != request.user_id:
        raise PermissionDeniedError(IDENTITY_TAKEN, code="oauth_identity_taken")
    return user_id, ended


def _merge_or_create(
    identity: ProviderIdentity,
    address: str | None,
    policy: LinkPolicy,
    role: Role | None,
    accounts: AccountService,
    sessions: sessionmaker[Session],
) -> tuple[str, bool]:
    """The account of this address (merged; True when its earlier sessions ended) or a new one
    (False), or a refusal."""
    if identity.email and address is None:
        raise BadRequestError(EMAIL_UNSUPPORTED, code="oauth_email_unsupported")
    existing = _account_of(address, sessions) if address else None
    if existing is not None:
        _check_merge(identity, address, policy, existing, sessions)
        ended = _end_password_sessions(accounts, existing.id)
        return _insert_identity(identity, existing.id, sessions), ended
    if not policy.signup:
        raise PermissionDeniedError(SIGNUP_DISABLED, code="oauth_signup_disabled")
    if address is None:
        raise BadRequestError(NO_EMAIL, code="oauth_no_email")
    try:
        user_id = accounts.create_user(_display_name(identity), address, None, role=role).id
    except BadRequestError as exc:
        if exc.code != "email_taken":
            raise
        raise BadRequestError(EMAIL_TAKEN, code="email_taken") from None
    return _insert_identity(identity, user_id, sessions), False


def _account_of(address: str, sessions: sessionmaker[Session]) -> User | None:
    """The account whose stored address is exactly this one (no folding of any kind)."""
    with sessions() as db:
        return db.scalar(select(User).where(User.email == address))


def _check_merge(
    identity: ProviderIdentity,
    address: str | None,
    policy: LinkPolicy,
    account: User,
    sessions: sessionmaker[Session],
) -> None:
    """Linking by address: only when allowed, verified, not an admin, not protected by a second
    factor, not already bound at this issuer, and only onto an account whose address wardgate has
    proof of.

    A second factor, because a sign-on takes its provider's `amr`/`acr` as one: a merge would let
    another provider, one that vouches for the address (self-registration and the mailbox is
    enough), sign in as the person without their factor, and stay linked (found by review). Linking
    from the account page asks for the factor first.

    wardgate sends no email, so an address typed into the sign-up form proves nothing: anyone can
    register a colleague's address and wait for the colleague's first single sign-on (a
    "pre-hijacked account"). The proof is a linked identity whose provider asserted this very address
    verified, such as the identity the account was created through. Anyone else links their provider
    from inside the account, which proves they hold it.
    """
    if not policy.merge_by_email:
        raise BadRequestError(EMAIL_TAKEN, code="email_taken")
    if not identity.email_verified:
        raise PermissionDeniedError(MERGE_UNVERIFIED, code="oauth_unverified_email")
    if account.role == Role.ADMIN:
        raise PermissionDeniedError(MERGE_ADMIN, code="oauth_admin_merge")
    if account.mfa_enabled:
        raise PermissionDeniedError(MERGE_SECOND_FACTOR, code="oauth_second_factor_merge")
    with sessions() as db:
        linked = db.execute(
            select(OAuthIdentity.issuer, OAuthIdentity.email, OAuthIdentity.email_verified).where(
                OAuthIdentity.user_id == account.id
            )
        ).all()
    if any(issuer == identity.issuer for issuer, _, _ in linked):
        raise PermissionDeniedError(MERGE_TAKEN, code="oauth_already_linked")
    if not any(verified and exact_address(email) == address for _, email, verified in linked):
        raise PermissionDeniedError(MERGE_UNPROVEN, code="oauth_merge_unproven")
    log.info("linking a %s identity to an existing account by its proven address", identity.provider)


def _insert_identity(identity: ProviderIdentity, user_id: str, sessions: sessionmaker[Session]) -> str:
    """Bind (issuer, subject) to `user_id`; if a concurrent sign-in bound it first, that binding's
    account. One identity per issuer and account (a unique index: two links racing cannot both win)."""
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
        if winner is None:  # not (issuer, subject) but (user, issuer): a concurrent link won
            raise PermissionDeniedError(LINK_TAKEN, code="oauth_link_taken") from None
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
