"""The small records the account service takes and returns, and the account policy it applies."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wardgate.config.model_access import Budget
from wardgate.config.values import Role
from wardgate.identity.validation import PasswordPolicy
from wardgate.security.ratelimit import Limit
from wardgate.security.tokens import IssuedToken
from wardgate.sessions.records import UserState


@dataclass(frozen=True, slots=True)
class AuthLimits:
    """The brute-force limits: per (account, IP), per IP across accounts, sign-up, password change."""

    signin: Limit
    signin_ip: Limit
    signup: Limit
    password_change: Limit


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """How accounts come to be and are protected: the deployment's settings as plain values."""

    default_role: Role
    signup_open: bool
    passwords: PasswordPolicy
    limits: AuthLimits
    max_sessions: int = 100  # live sessions per account; a new one ends the oldest beyond it


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the user and the signed token."""

    user: UserState
    token: IssuedToken


@dataclass(frozen=True, slots=True)
class SsoSession:
    """Where a single sign-on session came from: the provider, and its session id (OIDC `sid`),
    which a back-channel logout names."""

    provider: str
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class MfaRequired:
    """A first factor that passed, for an account that has a second: no session yet, a token for
    the second step (`wardgate.mfa`) and the methods the account can use for it."""

    user: UserState
    token: str
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a request came from, as far as the trusted-proxy layer could tell."""

    ip: str | None = None
    user_agent: str | None = None


class Keep(enum.Enum):
    """A field an edit leaves as it is, where None is a value of its own ("inherit", "no budget")."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class UserChanges:
    """An admin's edit of a user; None (or KEEP, for fields where None means something) leaves a
    field as it is."""

    role: str | None = None
    name: str | None = None
    email: str | None = None
    password: str | None = None
    active: bool | None = None
    allowed_models: tuple[str, ...] | Keep | None = KEEP  # None: inherit from role and groups
    token_budget: Budget | Keep | None = KEEP  # None: no budget of their own
