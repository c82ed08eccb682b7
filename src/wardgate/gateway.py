"""The composition root: the services of one wardgate process, built from the settings, started and stopped.

`Gateway.build(settings)` is the one place that reads `Settings` and wires the services together;
each service receives plain values (policies, limits, keys) and its collaborators. The HTTP layer
calls `start`/`stop` from its lifespan and never builds services itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.config.network import DATABASE_FORM
from wardgate.config.review import production_findings
from wardgate.config.settings import Settings
from wardgate.errors import ConfigError
from wardgate.identity.accounts import AccountService
from wardgate.identity.api_keys import ApiKeyPolicy, ApiKeyService
from wardgate.identity.authentication import Authenticator
from wardgate.identity.directory import Directory
from wardgate.identity.key_material import ApiKeyHasher
from wardgate.identity.records import AccountPolicy, AuthLimits
from wardgate.identity.validation import PasswordPolicy
from wardgate.mfa.factors import FactorStore
from wardgate.mfa.passkeys import CeremonySealer, RelyingParty
from wardgate.mfa.recovery import RecoveryCodeHasher
from wardgate.mfa.service import MfaPolicy, MfaService
from wardgate.oauth.presets import configured_providers
from wardgate.proxy.models import ModelRules
from wardgate.proxy.upstreams import UpstreamTable, upstreams_from_settings
from wardgate.security.keys import MFA_SECRETS, secret_ring
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.security.tokens import TokenCodec
from wardgate.sessions.channel import channel_from_url
from wardgate.sessions.records import KeyScope
from wardgate.sessions.registry import SessionRegistry
from wardgate.sessions.sync import ViewSync
from wardgate.storage import db, revision
from wardgate.storage.retention import Housekeeper, Job
from wardgate.usage.budgets import BudgetLedger
from wardgate.usage.recorder import UsageRecorder
from wardgate.usage.reports import UsageReports

if TYPE_CHECKING:  # optional parts, imported when configured (see `sign_on`, `ldap_from_settings`)
    from wardgate.ldap.signin import LdapSignIn
    from wardgate.oauth.service import SignOn

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """The services of one wardgate process and their life cycle."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: SessionRegistry
    sync: ViewSync
    codec: TokenCodec
    limiter: RateLimiter
    audit: AuditLog
    accounts: AccountService
    mfa: MfaService  # second factors: enrolment, the sign-in step, step-up
    directory: Directory  # accounts and sessions, read a page at a time
    api_keys: ApiKeyService
    authenticator: Authenticator
    upstreams: UpstreamTable
    sign_on: SignOn | None  # single sign-on, when a provider is configured
    ldap: LdapSignIn | None  # directory sign-in, with ENABLE_LDAP
    model_rules: ModelRules  # who may use which model, and who may manage the model servers
    budgets: BudgetLedger  # token budgets, counted in the database every instance shares
    usage: UsageRecorder  # usage records, written in bulk
    usage_reports: UsageReports  # and read back
    housekeeper: Housekeeper  # prunes what has outlived its retention
    measured: bool  # someone may read the metrics (`Settings.metrics_readable`): record them

    @classmethod
    def build(cls, settings: Settings) -> Gateway:
        """Create the services from settings (no I/O beyond creating the engine)."""
        s = settings
        try:
            engine = db.create_db_engine(
                s.effective_database_url,
                pool_size=s.database_pool_size,
                max_overflow=s.database_pool_max_overflow,
                pool_timeout=s.database_pool_timeout,
                pool_recycle=s.database_pool_recycle,
            )
        except (ArgumentError, NoSuchModuleError) as exc:
            # The settings check the URL's form; should SQLAlchemy still refuse it, say so as the
            # configuration problem it is, never as a traceback. Its message may hold the URL, and
            # so a password: it is not repeated.
            raise ConfigError(
                [f"DATABASE_URL: SQLAlchemy cannot use it ({type(exc).__name__}); {DATABASE_FORM}"]
            ) from None
        sessions = db.session_factory(engine)
        audit = AuditLog(sessions, retention_days=s.audit_retention_days)
        # Several worker processes share a machine's run directory (`UVICORN_WORKERS`).
        shared = s.data_dir / "run" if s.uvicorn_workers > 1 else None
        limiter = RateLimiter(
            s.redis_url,
            key_prefix=s.redis_key_prefix,
            ipv6_prefix=s.rate_limit_ipv6_prefix,
            shared_file=shared / "ratelimits.db" if shared else None,
        )
        channel = channel_from_url(
            s.redis_url, prefix=s.redis_key_prefix, shared_file=shared / "changes" if shared else None
        )
        registry = SessionRegistry(
            sessions,
            stale_after=max(10.0, 5 * s.session_sync_interval),
            publish=channel.publish,
            token_lifetime=s.jwt_expires_in,
        )
        usage = UsageRecorder(sessions, retention_days=s.usage_retention_days, measured=s.metrics_readable)
        budgets = BudgetLedger(sessions)
        ring = secret_ring(s)  # WEBUI_SECRET_KEY and its fallbacks
        api_keys = ApiKeyService(
            sessions,
            registry,
            ApiKeyHasher(ring),
            api_key_policy(s),
            audit,
            limiter=RateLimiter(shared_file=shared / "keylimits.db") if shared else None,
        )
        sync = ViewSync(
            registry,
            channel,
            interval=s.session_sync_interval,
            flushers=[audit.flush, usage.flush, api_keys.flush_redigests],
        )
        codec = TokenCodec(ring.secrets, s.jwt_expires_in)
        hasher = PasswordHasher(max_concurrent=s.password_hash_concurrency)
        accounts = AccountService(
            sessions, registry, hasher, codec, account_policy(s), limiter, audit, lock_dir=shared
        )
        failures = Limit.of("auth-failure", s.auth_failure_rate_limit)
        mfa = MfaService(
            sessions,
            accounts,
            FactorStore(sessions, mfa_keys(s), RecoveryCodeHasher(ring)),
            CeremonySealer(ring),
            limiter,
            audit,
            mfa_policy(s),
        )
        return cls(
            settings=s,
            measured=s.metrics_readable,
            engine=engine,
            sessions=sessions,
            registry=registry,
            sync=sync,
            codec=codec,
            limiter=limiter,
            audit=audit,
            accounts=accounts,
            mfa=mfa,
            directory=Directory(sessions),
            api_keys=api_keys,
            authenticator=Authenticator(codec, registry, api_keys, limiter, failures),
            upstreams=upstreams_from_settings(s),
            sign_on=sign_on(s, accounts, sessions, audit),
            ldap=ldap_from_settings(s, accounts, sessions, limiter, audit),
            model_rules=ModelRules(s.model_access_file, s.model_request_max_bytes),
            budgets=budgets,
            usage=usage,
            usage_reports=UsageReports(sessions),
            housekeeper=Housekeeper(
                [
                    Job("audit events", lambda now, stopping: audit.prune(now=now, stopping=stopping)),
                    Job("expired sessions", registry.prune_sessions),
                    Job("change-log entries", registry.prune_change_log),
                    Job("expired revocations in memory", registry.prune_view),
                    Job("usage records", usage.prune),
                    Job("budget counters", budgets.prune),
                    Job("pending second-factor sign-ins", mfa.prune),
                ]
            ),
        )

    async def start(self) -> None:
        """Migrate, load the revocation view, create the bootstrap admin, start the view's sync."""
        await anyio.to_thread.run_sync(self._start_blocking)
        await self.sync.start()
        await self.housekeeper.start()

    def _start_blocking(self) -> None:
        if not revision.at_newest(self.engine):
            # Alembic is imported only when there is something to migrate (11 MB, 100 ms).
            from wardgate.storage import schema

            schema.upgrade(self.engine, lock_dir=self.settings.data_dir)
        self.registry.load()
        for finding in production_findings(self.settings):
            self.audit.record("config.warning", "failure", actor="wardgate", detail=finding.split(":", 1)[0])
        s = self.settings
        if s.webui_admin_email and s.webui_admin_password:
            created = self.accounts.ensure_admin(
                s.webui_admin_email, s.webui_admin_password.get_secret_value(), s.webui_admin_name
            )
            if created:
                log.info("created the admin account from WEBUI_ADMIN_EMAIL")

    async def stop(self) -> None:
        """Stop background work, flush batched writes and close the database."""
        await self.housekeeper.stop()
        await self.sync.stop()
        self.engine.dispose()
        if self.sign_on is not None:
            await self.sign_on.aclose()

    def database_ready(self) -> bool:
        """True when the database answers a trivial query."""
        return db.answers(self.engine)


def account_policy(s: Settings) -> AccountPolicy:
    """How accounts come to be and are protected, from the settings."""
    return AccountPolicy(
        default_role=s.default_user_role,
        signup_open=s.signup_open,
        max_sessions=s.max_sessions_per_user,
        passwords=PasswordPolicy(s.password_min_length, s.password_pattern, s.password_validation_hint),
        limits=AuthLimits(
            Limit.of("signin", s.signin_rate_limit),
            Limit.of("signin-ip", s.signin_ip_rate_limit),
            Limit.of("signup", s.signup_rate_limit),
            Limit.of("password-change", s.password_change_rate_limit),
        ),
    )


def sign_on(
    s: Settings, accounts: AccountService, sessions: sessionmaker[Session], audit: AuditLog
) -> SignOn | None:
    """Single sign-on for these settings; None (and no OAuth library loaded) without a provider."""
    if not configured_providers(s):
        return None
    from wardgate.oauth.service import sign_on_from_settings  # Authlib, httpx2, joserfc: 4 MB, 50 ms

    return sign_on_from_settings(s, accounts, sessions, audit)


def ldap_from_settings(
    s: Settings,
    accounts: AccountService,
    sessions: sessionmaker[Session],
    limiter: RateLimiter,
    audit: AuditLog,
) -> LdapSignIn | None:
    """Directory sign-in for these settings; None without ENABLE_LDAP."""
    if not s.enable_ldap:
        return None
    from wardgate.ldap.directory import LdapConfig, LdapDirectory  # ldap3, pyasn1: 5 MB, 40 ms
    from wardgate.ldap.signin import LdapSignIn

    config = LdapConfig(
        host=s.ldap_server_host,
        port=s.ldap_server_port or (636 if s.ldap_use_tls else 389),
        use_tls=s.ldap_use_tls,
        validate_cert=s.ldap_validate_cert,
        ca_cert_file=str(s.ldap_ca_cert_file) if s.ldap_ca_cert_file else None,
        ciphers=s.ldap_ciphers,
        app_dn=s.ldap_app_dn,
        app_password=s.ldap_app_password.get_secret_value() if s.ldap_app_password else None,
        search_base=s.ldap_search_base or "",
        search_filter=s.ldap_search_filters,
        username_attribute=s.ldap_attribute_for_username,
        mail_attribute=s.ldap_attribute_for_mail,
        groups_attribute=s.ldap_attribute_for_groups if s.enable_ldap_group_management else None,
        label=s.ldap_server_label,
    )
    limits = account_policy(s).limits
    return LdapSignIn(
        LdapDirectory(config),
        accounts,
        sessions,
        limiter,
        limits,
        audit,
        manage_groups=s.enable_ldap_group_management,
    )


def mfa_policy(s: Settings) -> MfaPolicy:
    """When second factors are required and how they are checked, from the settings."""
    return MfaPolicy(
        required_roles=s.mfa_required_roles,
        step_up_max_age=int(s.mfa_step_up_max_age.total_seconds()),
        codes=Limit.of("mfa", s.mfa_rate_limit),
        signin_ip=Limit.of("signin-ip", s.signin_ip_rate_limit),
        issuer=s.webui_name,
        passwordless=s.enable_password_auth,
        relying_party=RelyingParty.from_url(s.webui_url, s.webui_name),
    )


def mfa_keys(s: Settings) -> list[bytes]:
    """The TOTP-secret encryption keys, newest first: `MFA_ENCRYPTION_KEY` when set (a list, for
    rotation), then always the one derived from `WEBUI_SECRET_KEY` for this purpose alone — the
    default, so that setting the variable later still opens the secrets made before (and
    re-encrypts them under its first key as they are used). Then the keys derived from each of
    `WEBUI_SECRET_KEY_FALLBACKS`, so that a rotation of the site's secret keeps them readable."""
    configured = [key.get_secret_value().encode("ascii") for key in s.mfa_encryption_key or ()]
    derived = [key for key in secret_ring(s).fernet_keys(MFA_SECRETS) if key not in configured]
    return [*configured, *derived]


def key_ids(s: Settings) -> tuple[str, ...]:
    """The key id of `WEBUI_SECRET_KEY`, then of each fallback (`wardgate check`: never the secrets)."""
    return secret_ring(s).ids


def api_key_policy(s: Settings) -> ApiKeyPolicy:
    """Who may hold API keys and what every key is limited to, from the settings."""
    return ApiKeyPolicy(
        enabled=s.enable_api_keys,
        users_may_create=s.user_permissions_features_api_keys,
        rate=Limit.of("api-key", s.api_key_rate_limit),
        endpoints=KeyScope(paths=s.api_key_endpoints),
        ipv6_prefix=s.rate_limit_ipv6_prefix,
    )
