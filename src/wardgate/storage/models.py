"""Database tables (SQLAlchemy 2.0 typed mappings). Times are integer Unix epoch seconds."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every wardgate table."""


PREFIX_INDEXES = frozenset({"ix_users_name_prefix", "ix_users_email_prefix"})
"""For searching users by prefix: lower(name) and, on PostgreSQL, email, in the "C" collation there."""


class User(Base):
    """An account. `session_stamp` changes whenever every session of the user must end."""

    __tablename__ = "users"
    # Also PREFIX_INDEXES, made by migration 0009 on expressions that differ by database.
    __table_args__ = (
        Index("ix_users_created", "created_at", "id"),
        Index("ix_users_role_created", "role", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    session_stamp: Mapped[str] = mapped_column(String(64))
    profile_image_url: Mapped[str] = mapped_column(String(512), default="/user.png")
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    allowed_models: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON list; NULL: inherit
    token_budget: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON budget; NULL: none
    # Whether a confirmed second factor exists: kept with the factor tables in one transaction, so
    # that the view (and every request) knows it without a query.
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class AuthSession(Base):
    """One signed-in session; its id is the token's `jti`. The database is the truth on revocation."""

    __tablename__ = "auth_sessions"
    __table_args__ = (
        Index("ix_auth_sessions_user_created", "user_id", "created_at", "id"),
        Index(
            "ix_auth_sessions_revoked_expiry",
            "expires_at",
            sqlite_where=text("revoked_at IS NOT NULL"),
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        Index("ix_auth_sessions_expires", "expires_at"),
        Index("ix_auth_sessions_sso", "sso_provider", "sso_sid"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    auth_method: Mapped[str] = mapped_column(String(32), default="password")
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_seen_at: Mapped[int] = mapped_column(BigInteger)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mfa_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # last second factor, if any
    # A single sign-on session: the provider and its session id (`sid`), for back-channel logout.
    sso_provider: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sso_sid: Mapped[str | None] = mapped_column(String(255), nullable=True)


class AuthChange(Base):
    """An append-only log of changes every instance's revocation view must apply."""

    __tablename__ = "auth_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # see wardgate.sessions.changes
    user_id: Mapped[str] = mapped_column(String(36))
    session_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # kind "session"
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the session's expiry
    key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # kind "api_key"


class AppState(Base):
    """Small named facts about the installation, such as "the first admin has been claimed"."""

    __tablename__ = "app_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AuditEvent(Base):
    """A security event: who did what to whom, from where, and how it ended. Never a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at", "id"),
        Index("ix_audit_events_event", "event", "at", "id"),
        Index("ix_audit_events_outcome", "outcome", "at", "id"),
        Index("ix_audit_events_actor", "actor", "at", "id"),
        Index("ix_audit_events_subject", "subject", "at", "id"),
        Index("uq_audit_events_window_key", "window_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger)
    event: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure | refused
    actor: Mapped[str | None] = mapped_column(String(320), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(320), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # Refusals of one rate-limit bucket in one window share a row: how many, and which window.
    count: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    window_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- API keys (wardgate.identity) -------------------------------------------------------------------


class ApiKey(Base):
    """A program's key: only its digest is stored; `session_stamp` binds it to the owner's sessions."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # "sk-" and 8 hex digits, for display
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # HMAC-SHA256, hex
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the secret's kid (NULL: older)
    session_stamp: Mapped[str] = mapped_column(String(64))
    upstreams: Mapped[str | None] = mapped_column(Text, nullable=True)  # newline-separated names
    paths: Mapped[str | None] = mapped_column(Text, nullable=True)  # newline-separated prefixes
    rate_limit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    models: Mapped[str | None] = mapped_column(Text, nullable=True)  # newline-separated patterns
    token_budget: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON budget
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A service key (set by an admin): it acts for the person Open WebUI's server names in each call,
    # never for its owner (`wardgate.proxy.acting`).
    acts_for_users: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


# --- single sign-on (wardgate.oauth) -------------------------------------------------------------


class OAuthIdentity(Base):
    """An account at a provider, keyed by (issuer, subject) (OIDC Core §5.7), linked to one user."""

    __tablename__ = "oauth_identities"
    __table_args__ = (
        UniqueConstraint("issuer", "subject", name="uq_oauth_identities_issuer_subject"),
        Index("ix_oauth_identities_user", "user_id"),
        Index("uq_oauth_identities_user_issuer", "user_id", "issuer", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    issuer: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_login_at: Mapped[int] = mapped_column(BigInteger)


class OAuthToken(Base):
    """A provider's tokens for one wardgate session, encrypted (MultiFernet); never sent to clients."""

    __tablename__ = "oauth_tokens"
    __table_args__ = (Index("ix_oauth_tokens_user", "user_id"),)

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("auth_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class UserGroup(Base):
    """A group a user belongs to, as the provider's group claim said at the last sign-in."""

    __tablename__ = "user_groups"

    user_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(255), primary_key=True)


class OAuthStateUse(Base):
    """A consumed sign-in `state`: inserting its id twice fails, so a callback works only once."""

    __tablename__ = "oauth_state_uses"
    __table_args__ = (Index("ix_oauth_state_uses_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class UsageRecord(Base):
    """One proxied model call: who, which model, how many tokens. Never what was asked or answered."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_at", "at", "id"),
        Index("ix_usage_records_user", "user_id", "at"),
        Index("ix_usage_records_key", "api_key_id", "at"),
        Index("ix_usage_records_model", "model", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[int] = mapped_column(BigInteger)  # when the call started
    user_id: Mapped[str] = mapped_column(String(36))
    api_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    upstream: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # NULL: not reported
    completion_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cached_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reasoning_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    ttfb_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    streamed: Mapped[bool] = mapped_column(Boolean)
    complete: Mapped[bool] = mapped_column(Boolean)  # False: the client left, or the stream broke off
    metered: Mapped[bool] = mapped_column(Boolean)  # False: the upstream reported no usage at all
    chat_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class BudgetCounter(Base):
    """Tokens and requests charged to one budget in one period (shared by every instance)."""

    __tablename__ = "budget_counters"

    scope: Mapped[str] = mapped_column(String(300), primary_key=True)  # e.g. "user:<id>:1d"
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)  # the period's end: then pruned


# --- second factors (wardgate.mfa) -------------------------------------------------------------------


class TotpFactor(Base):
    """An authenticator app: the secret encrypted (MultiFernet), the last time step it accepted."""

    __tablename__ = "mfa_totp"

    user_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    ciphertext: Mapped[str] = mapped_column(Text)
    confirmed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # NULL: being set up
    last_step: Mapped[int] = mapped_column(BigInteger, default=0)  # codes at or before it are spent
    created_at: Mapped[int] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """One single-use recovery code, stored as a keyed digest (HMAC-SHA256)."""

    __tablename__ = "mfa_recovery_codes"
    __table_args__ = (Index("ix_mfa_recovery_codes_user", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the secret's kid (NULL: older)
    used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Passkey(Base):
    """A WebAuthn credential: its public key and the signature counter last seen."""

    __tablename__ = "mfa_passkeys"
    __table_args__ = (Index("ix_mfa_passkeys_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)  # base64url, up to 1,023 bytes
    name: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    transports: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class PendingSignin(Base):
    """A sign-in that passed its first factor and awaits the second (the `mfa_token`).

    The id is the SHA-256 of the token handed to the client, so a database read gives no usable token.
    """

    __tablename__ = "mfa_pending_signins"
    __table_args__ = (Index("ix_mfa_pending_signins_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36), ForeignKey("users.id", ondelete="CASCADE"))
    auth_method: Mapped[str] = mapped_column(String(32))  # the first factor: "password", "oauth"
    sso_provider: Mapped[str | None] = mapped_column(String(32), nullable=True)  # as on auth_sessions
    sso_sid: Mapped[str | None] = mapped_column(String(255), nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
