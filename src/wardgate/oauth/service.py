"""`SignOn`: single sign-on from the first redirect to the wardgate session, and back out.

The HTTP layer (`wardgate.http.routes.oauth`) only moves cookies and redirects; every decision is
made here or in the modules this one composes: `flow` (the protocol, Authlib), `metadata` (discovery
and keys), `state` (the browser-bound pending sign-in), `linking` (which account) and `token_store`
(encrypted provider tokens). Database work runs in worker threads, network calls on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio.to_thread
import httpx2
from authlib.integrations.base_client import OAuthError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.config.settings import Settings
from wardgate.errors import ApiError, BadRequestError, NotFoundError, PermissionDeniedError, ProviderError
from wardgate.identity.accounts import AccountService
from wardgate.identity.records import ClientInfo, MfaRequired, SignedIn, SsoSession
from wardgate.oauth import flow
from wardgate.oauth.backchannel import UNSIGNED, Logout, verify_logout_token
from wardgate.oauth.claims import shows_second_factor
from wardgate.oauth.linking import (
    LINK_OTHER_BROWSER,
    LINK_SESSION_ENDED,
    LinkPolicy,
    LinkRequest,
    ProviderIdentity,
    link_identity,
)
from wardgate.oauth.metadata import ProviderDirectory, ServerMetadata
from wardgate.oauth.presets import (
    ProviderConfig,
    configured_providers,
    link_policy,
    state_keys,
    token_keys,
)
from wardgate.oauth.refusals import LOGOUT_TOKEN_USED, UNKNOWN_PROVIDER
from wardgate.oauth.state import LoginStateSealer, StateLedger
from wardgate.oauth.token_store import ProviderTokens, ProviderTokenStore, token_cipher
from wardgate.storage.models import OAuthIdentity, OAuthStateUse

log = logging.getLogger(__name__)
# Refusals of a callback anyone can send without having begun a sign-in (no state, or a state that
# is not this browser's): stored one row per address and window, not one per request (500 forged
# callbacks a second made 500 rows a second for 90 days, found by review).
_FORGEABLE = frozenset(
    {"oauth_state_missing", "oauth_state_invalid", "oauth_state_mismatch", "oauth_state_used"}
)


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished callback: the new session, if one was started, and where the browser goes next."""

    signed: SignedIn | None  # None: a link from the account page that kept the browser's session
    next_path: str
    linked: bool = False  # a link from the account page
    sessions_ended: bool = False  # the account's earlier sessions and API keys ended
    mfa: MfaRequired | None = None  # the account's own second factor is still to be shown


class SignOn:
    """The configured providers and everything needed to sign in with them."""

    def __init__(
        self,
        providers: Mapping[str, ProviderConfig],
        policy: LinkPolicy,
        accounts: AccountService,
        sessions: sessionmaker[Session],
        *,
        token_keys: Sequence[bytes],
        state_keys: Sequence[bytes],
        timeout: float = 10.0,
        tls: ssl.SSLContext | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.providers = dict(providers)
        self._audit = audit or AuditLog(sessions)
        self._policy = policy
        self._accounts = accounts
        self._sessions = sessions
        self._tls = tls or ssl.create_default_context()
        self._timeout = timeout
        self._http = httpx2.AsyncClient(verify=self._tls, timeout=timeout, follow_redirects=False)
        self.directory = ProviderDirectory(self._http)
        self.sealer = LoginStateSealer(state_keys)
        self.ledger = StateLedger(sessions)
        self.tokens = ProviderTokenStore(sessions, token_cipher(token_keys))
        self._stop_following = self.tokens.follow_session_ends()
        self._refresh_locks: dict[str, asyncio.Lock] = {}

    def display_names(self) -> dict[str, str]:
        """Provider id -> name for the sign-in page (`/api/config`)."""
        return {p.id: p.name for p in self.providers.values()}

    def provider(self, provider_id: str) -> ProviderConfig:
        """A configured provider, or NotFoundError."""
        found = self.providers.get(provider_id)
        if found is None:
            raise NotFoundError(UNKNOWN_PROVIDER, code="unknown_provider")
        return found

    async def backchannel_logout(self, provider_id: str, token: str) -> int:
        """OpenID Connect Back-Channel Logout: verify the provider's logout token, accept its `jti`
        once (on every instance), and end the sessions it names; how many ended."""
        provider = self.provider(provider_id)
        if not provider.is_oidc:
            raise NotFoundError(UNKNOWN_PROVIDER, code="unknown_provider")
        try:
            metadata = await self.directory.metadata(provider)
            logout = await verify_logout_token(self.directory, provider, metadata, token)
            await anyio.to_thread.run_sync(self._consume_logout, logout)
        except ApiError as exc:
            if exc.code != UNSIGNED:  # made-up tokens are logged, not stored: anyone can post them
                self._audit.record(
                    "auth.backchannel_logout", "refused", detail=f"oauth:{provider.id} {exc.code}"
                )
            raise
        user_id = None
        # `sub` names the person only where wardgate keys identities by it (OAUTH_SUB_CLAIM unset);
        # otherwise, and for a subject nobody here has, the `sid` alone decides.
        if logout.sub is not None and provider.sub_claim == "sub":
            user_id = await anyio.to_thread.run_sync(self._user_of_subject, logout.issuer, logout.sub)
        if user_id is None and logout.sid is None:
            return 0
        end = partial(self._accounts.end_sso_sessions, provider.id, sid=logout.sid, user_id=user_id)
        ended = await anyio.to_thread.run_sync(end)
        self._audit.record(
            "auth.backchannel_logout", "success", detail=f"oauth:{provider.id} {ended} session(s) ended"
        )
        return ended

    def _consume_logout(self, logout: Logout) -> None:
        try:
            with self._sessions() as db, db.begin():
                db.add(OAuthStateUse(id=logout.use_id, expires_at=logout.forget_after))
        except IntegrityError:
            raise BadRequestError(LOGOUT_TOKEN_USED, code="logout_token_used") from None

    def _user_of_subject(self, issuer: str, subject: str) -> str | None:
        with self._sessions() as db:
            return db.scalar(
                select(OAuthIdentity.user_id).where(
                    OAuthIdentity.issuer == issuer, OAuthIdentity.subject == subject
                )
            )

    async def begin(
        self, provider_id: str, redirect_uri: str, next_path: str, *, link: LinkRequest | None = None
    ) -> tuple[str, str]:
        """The provider's authorization URL and the sealed state cookie value for this browser; with
        `link`, the callback links the identity to that person's account (the account page)."""
        provider = self.provider(provider_id)
        metadata = await self.directory.metadata(provider)
        login = flow.new_login(provider, redirect_uri, next_path, link)
        return flow.authorization_url(provider, metadata, login), self.sealer.seal(login)

    async def complete(
        self,
        provider_id: str,
        sealed: str | None,
        params: Mapping[str, str],
        client: ClientInfo,
        *,
        presenter: str | None = None,
    ) -> Completed:
        """Check the callback, exchange the code, link the account, start a session ("oauth").

        `presenter` is the session the returning browser itself holds: a link is completed only in
        the browser whose session asked for it (a state cookie planted in someone else's browser,
        by a sibling site, must not link that person's identity to the planter's account).
        """
        provider = self.provider(provider_id)
        try:
            done = await self._complete(provider, sealed, params, client, presenter)
        except ApiError as exc:
            if exc.code in _FORGEABLE:  # anyone can send these, as often as they like: grouped
                self._audit.refused("auth.signin", exc)
            else:
                self._audit.record("auth.signin", "failure", detail=f"oauth:{provider.id} {exc.code}")
            raise
        if done.signed is not None:
            subject = done.signed.user.email
            self._audit.record("auth.signin", "success", subject=subject, detail=f"oauth:{provider.id}")
        return done

    async def _complete(
        self,
        provider: ProviderConfig,
        sealed: str | None,
        params: Mapping[str, str],
        client: ClientInfo,
        presenter: str | None,
    ) -> Completed:
        login = self.sealer.open(sealed, provider.id, params.get("state"))
        await anyio.to_thread.run_sync(self.ledger.consume, login)
        request = flow.link_request(login)
        if request is not None and presenter is None:  # signed out meanwhile (or never here)
            raise PermissionDeniedError(LINK_SESSION_ENDED, code="oauth_link_session_ended")
        if request is not None and presenter != request.session_id:
            raise PermissionDeniedError(LINK_OTHER_BROWSER, code="oauth_link_other_browser")
        metadata = await self.directory.metadata(provider)
        code = flow.check_callback(metadata, params)
        async with flow.oauth_client(provider, metadata, self._tls, self._timeout) as http:
            token = await flow.exchange_code(http, metadata, login, code)
            identity = await self._identity(provider, metadata, http, token, login.nonce)
        identity = replace(identity, missing_scopes=flow.missing_scopes(provider, token))
        linked = await anyio.to_thread.run_sync(
            partial(link_identity, identity, self._policy, self._accounts, self._sessions, request=request)
        )
        if request is not None:
            self._audit.record(
                "auth.sso_linked", "success", subject=linked.user.email, detail=f"oauth:{provider.id}"
            )
            if not linked.sessions_ended:  # the browser's own session goes on
                return Completed(None, login.next_path, linked=True)
        user = linked.user
        # The provider's word that it asked for a second factor counts as one; otherwise an account
        # with a factor of wardgate's shows it next (the provider's tokens are not kept then).
        shown = shows_second_factor(identity.claims, self._policy.mfa_acr_values)
        sid = identity.claims.get("sid")  # the provider's session, named by a back-channel logout
        sso = SsoSession(provider.id, sid if isinstance(sid, str) and 0 < len(sid) <= 255 else None)
        begin = partial(self._accounts.begin_session, user, client, "oauth", second_factor=shown, sso=sso)
        signed = await anyio.to_thread.run_sync(begin)
        if isinstance(signed, MfaRequired):
            return Completed(None, login.next_path, mfa=signed)
        tokens = ProviderTokens.from_response(provider.id, token, now=int(time.time()))
        await anyio.to_thread.run_sync(self.tokens.save, signed.token.session_id, user.id, tokens)
        return Completed(signed, login.next_path, request is not None, linked.sessions_ended)

    async def _identity(
        self,
        provider: ProviderConfig,
        metadata: ServerMetadata,
        http: Any,
        token: Mapping[str, Any],
        nonce: str | None,
    ) -> ProviderIdentity:
        if not provider.is_oidc:
            return await flow.github_identity(provider, http)
        issuer, claims = await flow.verify_id_token(self.directory, provider, metadata, token, nonce)
        userinfo = (
            await flow.fetch_json(http, metadata.userinfo_endpoint, provider.id)
            if metadata.userinfo_endpoint
            else None
        )
        return flow.oidc_identity(provider, issuer, claims, userinfo)

    async def end_session_url(self, session_id: str, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0 §2) for a live session that SSO
        started: the end-session URL with `id_token_hint`, `post_logout_redirect_uri` and
        `client_id`, URL-encoded; None for other sessions, for a session that has already ended (its
        ID token is no longer handed to anyone) and for providers without an end-session endpoint.
        The session's provider tokens are forgotten either way."""
        tokens = await anyio.to_thread.run_sync(self.tokens.load, session_id)
        if tokens is None:
            return None
        await anyio.to_thread.run_sync(self.tokens.delete, session_id)
        provider = self.providers.get(tokens.provider)
        if provider is None:
            return None
        endpoint = provider.end_session_endpoint
        if endpoint is None and provider.is_oidc:
            try:
                endpoint = (await self.directory.metadata(provider)).end_session_endpoint
            except ProviderError:
                return None  # the provider is down: wardgate's own sign-out still happened
        if endpoint is None:
            return None
        params = {"post_logout_redirect_uri": post_logout_redirect_uri, "client_id": provider.client_id}
        if tokens.id_token:
            params = {"id_token_hint": tokens.id_token, **params}
        return add_query(endpoint, params)

    async def fresh_tokens(self, session_id: str) -> ProviderTokens | None:
        """The session's provider tokens, refreshed first when the access token is about to expire."""
        lock = self._refresh_locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            try:
                return await self._fresh_tokens(session_id)
            finally:
                self._refresh_locks.pop(session_id, None)

    async def _fresh_tokens(self, session_id: str) -> ProviderTokens | None:
        tokens = await anyio.to_thread.run_sync(self.tokens.load, session_id)
        if tokens is None or not tokens.needs_refresh(int(time.time())):
            return tokens
        provider = self.providers.get(tokens.provider)
        if provider is None:
            return tokens
        metadata = await self.directory.metadata(provider)
        try:
            async with flow.oauth_client(provider, metadata, self._tls, self._timeout) as http:
                response = await http.refresh_token(
                    metadata.token_endpoint, refresh_token=tokens.refresh_token
                )
        except (OAuthError, httpx2.HTTPError, ValueError, OverflowError) as exc:  # Authlib's int(1e999)
            log.warning("%s token refresh failed (%s)", provider.id, type(exc).__name__)
            current = await anyio.to_thread.run_sync(self.tokens.load, session_id)
            if current is not None and current != tokens:
                return current  # another instance refreshed first (a rotated refresh token)
            await anyio.to_thread.run_sync(self.tokens.delete, session_id)
            return None
        fresh = ProviderTokens.from_response(provider.id, response, tokens, now=int(time.time()))
        await anyio.to_thread.run_sync(self.tokens.replace, session_id, fresh)
        return fresh

    async def aclose(self) -> None:
        """Close the HTTP connection pool; stop following the ends of sessions."""
        self._stop_following()
        await self._http.aclose()


def add_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to its query, every value URL-encoded (RFC 3986 §3.4)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def sign_on_from_settings(
    settings: Settings,
    accounts: AccountService,
    sessions: sessionmaker[Session],
    audit: AuditLog | None = None,
) -> SignOn | None:
    """The single-sign-on service for these settings; None when no provider is configured."""
    providers = configured_providers(settings)
    if not providers:
        return None
    return SignOn(
        providers,
        link_policy(settings),
        accounts,
        sessions,
        token_keys=token_keys(settings),
        state_keys=state_keys(settings),
        audit=audit,
    )
