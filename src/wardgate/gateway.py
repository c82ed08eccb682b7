"""The services of one process.

`Gateway` holds what one process needs (engine, revocation registry, account service) and knows how to
start (migrations, loading the view, the bootstrap admin) and stop. The HTTP layer (`wardgate.http`) calls
`start`/`stop` from its lifespan and never builds services itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.config.review import production_findings
from wardgate.config.settings import Settings
from wardgate.identity.accounts import AccountService
from wardgate.identity.api_keys import ApiKeyService, api_keys_from_settings
from wardgate.identity.records import AuthLimits, PasswordPolicy
from wardgate.oauth.service import SignOn, sign_on_from_settings
from wardgate.proxy.upstreams import Upstream, UpstreamTable, parse_list
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import Limit, RateLimiter, parse_rate
from wardgate.security.tokens import TokenCodec
from wardgate.sessions.channel import RedisChangeChannel
from wardgate.sessions.registry import SessionRegistry
from wardgate.storage import db, schema

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """The services of one wardgate process and their life cycle."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    registry: SessionRegistry
    accounts: AccountService
    codec: TokenCodec
    limiter: RateLimiter
    auth_failures: Limit
    audit: AuditLog
    channel: RedisChangeChannel | None = None
    upstreams: UpstreamTable = field(default_factory=UpstreamTable)
    sign_on: SignOn | None = None  # single sign-on, when a provider is configured
    api_keys: ApiKeyService = field(init=False)  # set by build()
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _in_threads: set[asyncio.Future[object]] = field(default_factory=set)

    @classmethod
    def build(cls, settings: Settings) -> Gateway:
        """Create the services from settings (no I/O beyond creating the engine)."""
        gateway = cls._build_core(settings)
        gateway.upstreams = upstreams_from_settings(settings)
        gateway.sign_on = sign_on_from_settings(settings, gateway.accounts, gateway.sessions, gateway.audit)
        gateway.api_keys = api_keys_from_settings(settings, gateway.sessions, gateway.registry, gateway.audit)
        return gateway

    @classmethod
    def _build_core(cls, settings: Settings) -> Gateway:
        db.raise_for_url(settings.effective_database_url)
        engine = db.create_db_engine(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_pool_max_overflow,
            pool_timeout=settings.database_pool_timeout,
            pool_recycle=settings.database_pool_recycle,
        )
        limiter = RateLimiter(settings.redis_url, key_prefix=settings.redis_key_prefix)
        channel = (
            RedisChangeChannel(settings.redis_url, prefix=settings.redis_key_prefix)
            if settings.redis_url
            else None
        )
        sessions = db.session_factory(engine)
        audit = AuditLog(sessions)
        registry = SessionRegistry(sessions, stale_after=max(10.0, 5 * settings.session_sync_interval))
        codec = TokenCodec([settings.secret_key], settings.jwt_expires_in)
        policy = PasswordPolicy(
            settings.password_min_length, settings.password_pattern, settings.password_validation_hint
        )
        accounts = AccountService(
            sessions,
            registry,
            PasswordHasher(max_concurrent=settings.password_hash_concurrency),
            codec,
            policy,
            default_role=settings.default_user_role,
            signup_enabled=lambda: (
                settings.enable_signup and settings.enable_login_form and settings.enable_password_auth
            ),
            limiter=limiter,
            audit=audit,
            limits=AuthLimits.parse(
                settings.signin_rate_limit,
                settings.signin_ip_rate_limit,
                settings.signup_rate_limit,
                settings.password_change_rate_limit,
            ),
        )
        if channel is not None:
            registry.notify = channel.publish
            registry.trusted = False  # until the subscription is up and a sync has run
        auth_failures = Limit("auth-failure", parse_rate(settings.auth_failure_rate_limit))
        return cls(
            settings, engine, sessions, registry, accounts, codec, limiter, auth_failures, audit, channel
        )

    async def start(self) -> None:
        """Migrate, load the revocation view, create the bootstrap admin, start background sync."""
        await anyio.to_thread.run_sync(self._start_blocking)
        self._tasks.append(asyncio.create_task(self._sync_forever(), name="wardgate-session-sync"))
        if self.channel is not None:
            listen = self.channel.listen(self._on_channel_notice, self._on_channel_state)
            self._tasks.append(asyncio.create_task(listen, name="wardgate-revocation-channel"))

    async def _in_thread(self, work: Callable[[], object]) -> None:
        """Run background database work in a thread that `stop` waits for.

        Cancelling a task does not stop the thread it waits on (anyio abandons it); without this, `stop`
        could dispose of the engine while a sync still holds a connection, leaking it.
        """
        future = asyncio.ensure_future(anyio.to_thread.run_sync(work))
        self._in_threads.add(future)
        future.add_done_callback(self._in_threads.discard)
        await asyncio.shield(future)

    async def _on_channel_notice(self) -> None:
        try:
            await self._in_thread(self.registry.sync)
        except SQLAlchemyError as exc:  # the poll retries; the view ages into the database fallback
            log.warning("session sync on notice failed (%s)", type(exc).__name__)

    async def _on_channel_state(self, connected: bool) -> None:
        if not connected:
            self.registry.trusted = False
            return
        try:
            # Catch up on whatever was missed while disconnected, then trust the view again.
            await self._in_thread(self.registry.sync)
        except SQLAlchemyError as exc:
            log.warning(
                "session sync after reconnecting failed (%s); view stays untrusted", type(exc).__name__
            )
            return
        log.info("revocation channel connected")
        self.registry.trusted = True

    def _start_blocking(self) -> None:
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await asyncio.gather(*self._in_threads, return_exceptions=True)
        with contextlib.suppress(SQLAlchemyError):
            await anyio.to_thread.run_sync(self.registry.flush_touches)
        self.engine.dispose()
        if self.channel is not None:
            self.channel.close()
        if self.sign_on is not None:
            await self.sign_on.aclose()

    async def _sync_forever(self) -> None:
        interval = self.settings.session_sync_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self._in_thread(self.registry.sync)
                if self.channel is not None and self.channel.connected:
                    self.registry.trusted = True  # subscribed and caught up
                await self._in_thread(self.registry.flush_touches)
            except SQLAlchemyError as exc:
                # Fail closed: the view's age grows and requests fall back to the database.
                log.warning("session sync failed (%s); checks fall back to the database", type(exc).__name__)

    def database_ready(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True


def upstreams_from_settings(settings: Settings) -> UpstreamTable:
    """The configured upstreams: Ollama at /ollama, OpenAI-compatible at /openai, the app elsewhere."""
    s = settings
    table: list[Upstream] = []
    if s.ollama_base_url:
        table.append(
            Upstream(
                "ollama",
                s.ollama_base_url,
                "/ollama",
                parse_list(s.ollama_allowed_roles),
                parse_list(s.ollama_allowed_groups),
            )
        )
    if s.openai_api_base_url:
        inject = (
            (("Authorization", f"Bearer {s.openai_api_key.get_secret_value()}"),) if s.openai_api_key else ()
        )
        table.append(
            Upstream(
                "openai",
                s.openai_api_base_url,
                "/openai",
                parse_list(s.openai_allowed_roles),
                parse_list(s.openai_allowed_groups),
                inject,
            )
        )
    if s.upstream_url:
        table.append(
            Upstream(
                "app",
                s.upstream_url,
                "",
                parse_list(s.upstream_allowed_roles),
                parse_list(s.upstream_allowed_groups),
                strips_authorization=False,
            )
        )
    return UpstreamTable(tuple(table))
