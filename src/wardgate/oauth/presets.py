"""Provider presets: Google, Microsoft, GitHub and generic OpenID Connect, from the settings.

This is the one place that turns `Settings` into plain values for single sign-on (the rest of
`wardgate.oauth` never sees the settings). A provider is on when its client id and secret are set;
`wardgate.config.sign_on` has already refused half-configured ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from wardgate.config.settings import Settings
from wardgate.oauth.linking import LinkPolicy
from wardgate.security.keys import OAUTH_LOGIN_STATE, OAUTH_TOKENS, secret_ring

# Google's ID tokens carry either form of its issuer (Google Identity, "Validate an ID token").
_GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
# Google's token response names the OpenID scopes by their API URLs (OAuth 2.0 Scopes for Google APIs).
_GOOGLE_SCOPES: dict[str, tuple[str, ...]] = {
    "https://www.googleapis.com/auth/userinfo.email": ("email",),
    "https://www.googleapis.com/auth/userinfo.profile": ("profile",),
}
# GitHub: `user` grants read/write access to profile info, which includes `user:email` and
# `read:user` (GitHub Docs, "Scopes for OAuth apps").
_GITHUB_SCOPES: dict[str, tuple[str, ...]] = {"user": ("read:user", "user:email", "user:follow")}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One configured provider, as plain values."""

    id: str
    name: str
    client_id: str
    client_secret: str | None  # None: a public client, authenticated by PKCE alone (RFC 7636)
    scope: str
    redirect_uri: str | None = None  # the *_REDIRECT_URI variable; None: derived per request
    discovery_url: str | None = None  # OpenID Connect Discovery 1.0 §4; None: plain OAuth 2.0
    authorize_url: str | None = None  # plain OAuth 2.0 endpoints (GitHub)
    token_url: str | None = None
    userinfo_url: str | None = None
    emails_url: str | None = None  # GitHub's verified-address list
    issuer: str | None = None  # the identity issuer when there is no ID token (GitHub)
    extra_issuers: tuple[str, ...] = ()
    issuer_matches_discovery_url: bool = True  # OIDC Discovery §4.3; Microsoft names tenants two ways
    token_endpoint_auth_method: str | None = None  # None: chosen from the provider's metadata
    sub_claim: str = "sub"
    email_claim: str = "email"
    name_claim: str = "name"
    end_session_endpoint: str | None = None  # OPENID_END_SESSION_ENDPOINT overrides discovery
    extra_authorize_params: dict[str, str] = field(default_factory=dict)
    # A claim that vouches for the address instead of `email_verified`: Microsoft's `xms_edov`
    # (email domain owner verified). Only the preset that defines it is believed.
    domain_verified_claim: str | None = None
    # Granted scope names that stand for requested ones: Google answers `email` with
    # `https://www.googleapis.com/auth/userinfo.email`; GitHub's `user` includes `user:email`.
    scope_aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Whether the token response's `scope` speaks about the requested scopes (RFC 6749 §5.1).
    # Microsoft's names the access token's resource scopes only: its documented answer to
    # "openid offline_access https://graph.microsoft.com/mail.read" is "scope": "...mail.read"
    # (Microsoft identity platform, authorization code flow); its groups come from the app's token
    # configuration, never from a scope, so nothing is lost by not comparing.
    grant_names_scopes: bool = True

    @property
    def is_oidc(self) -> bool:
        """True for OpenID Connect providers (ID token, nonce, discovery)."""
        return self.discovery_url is not None


def configured_providers(s: Settings) -> dict[str, ProviderConfig]:
    """Every enabled provider by id (`google`, `microsoft`, `github`, `oidc`), in that order."""
    common: dict[str, str | None] = {
        "email_claim": s.oauth_email_claim,
        "name_claim": s.oauth_username_claim,
        "end_session_endpoint": s.openid_end_session_endpoint,
    }
    if s.oauth_sub_claim:
        common["sub_claim"] = s.oauth_sub_claim
    presets = (_google(s, common), _microsoft(s, common), _github(s, common), _oidc(s, common))
    return {p.id: p for p in presets if p is not None}


def _google(s: Settings, common: dict[str, Any]) -> ProviderConfig | None:
    if not (s.google_client_id and s.google_client_secret):
        return None
    return ProviderConfig(
        "google",
        "Google",
        s.google_client_id,
        s.google_client_secret.get_secret_value(),
        " ".join(s.google_oauth_scope),
        s.google_redirect_uri,
        discovery_url=s.google_openid_provider_url,
        extra_issuers=_GOOGLE_ISSUERS,
        scope_aliases=_GOOGLE_SCOPES,
        **common,
    )


def _microsoft(s: Settings, common: dict[str, Any]) -> ProviderConfig | None:
    if not (s.microsoft_client_id and s.microsoft_client_secret and s.microsoft_client_tenant_id):
        return None
    base = s.microsoft_client_login_base_url.rstrip("/")
    tenant = quote(s.microsoft_client_tenant_id, safe="")
    return ProviderConfig(
        "microsoft",
        "Microsoft",
        s.microsoft_client_id,
        s.microsoft_client_secret.get_secret_value(),
        " ".join(s.microsoft_oauth_scope),
        s.microsoft_redirect_uri,
        discovery_url=(
            f"{base}/{tenant}/v2.0/.well-known/openid-configuration?appid={quote(s.microsoft_client_id)}"
        ),
        issuer_matches_discovery_url=False,
        domain_verified_claim="xms_edov",
        grant_names_scopes=False,
        **common,
    )


def _github(s: Settings, common: dict[str, Any]) -> ProviderConfig | None:
    if not (s.github_client_id and s.github_client_secret):
        return None
    web, api = s.github_base_url.rstrip("/"), s.github_api_base_url.rstrip("/")
    return ProviderConfig(
        "github",
        "GitHub",
        s.github_client_id,
        s.github_client_secret.get_secret_value(),
        " ".join(s.github_client_scope),
        s.github_client_redirect_uri,
        authorize_url=f"{web}/login/oauth/authorize",
        token_url=f"{web}/login/oauth/access_token",
        userinfo_url=f"{api}/user",
        emails_url=f"{api}/user/emails",
        issuer=web,
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
        scope_aliases=_GITHUB_SCOPES,
        **{"sub_claim": "id", **common},
    )


def _oidc(s: Settings, common: dict[str, Any]) -> ProviderConfig | None:
    if not (s.oauth_client_id and s.openid_provider_url):
        return None
    secret = s.oauth_client_secret.get_secret_value() if s.oauth_client_secret else None
    return ProviderConfig(
        "oidc",
        s.oauth_provider_name,
        s.oauth_client_id,
        secret,
        " ".join(s.oauth_scopes),
        s.openid_redirect_uri,
        discovery_url=s.openid_provider_url,
        token_endpoint_auth_method=s.oauth_token_endpoint_auth_method or (None if secret else "none"),
        **common,
    )


def link_policy(s: Settings) -> LinkPolicy:
    """The account-linking rules (sign-up, merging, domains, roles, groups)."""
    domains = s.oauth_allowed_domains
    return LinkPolicy(
        signup=s.enable_oauth_signup,
        merge_by_email=s.oauth_merge_accounts_by_email,
        allowed_domains=None if "*" in domains or not domains else frozenset(domains),
        role_management=s.enable_oauth_role_management,
        roles_claim=s.oauth_roles_claim,
        roles_separator=s.oauth_roles_separator,
        allowed_roles=s.oauth_allowed_roles,
        admin_roles=s.oauth_admin_roles,
        group_management=s.enable_oauth_group_management,
        groups_claim=s.oauth_groups_claim,
        groups_separator=s.oauth_groups_separator,
        blocked_groups=s.oauth_blocked_groups,
        upstream_groups=bool(s.ollama_allowed_groups or s.openai_allowed_groups or s.upstream_allowed_groups),
        mfa_acr_values=s.oauth_mfa_acr_values,
    )


def token_keys(s: Settings) -> list[bytes]:
    """The provider-token encryption keys, newest first.

    `OAUTH_SESSION_TOKEN_ENCRYPTION_KEY` when set (a key list, for rotation); then the keys derived
    from `WEBUI_SECRET_KEY` and each of `WEBUI_SECRET_KEY_FALLBACKS` (`wardgate.security.keys`): never
    the JWT key itself, no extra file next to the database, the same on every instance that shares
    the secrets, and rows written before the variable was set (or the secret rotated) stay readable.
    """
    explicit = s.oauth_session_token_encryption_key or ()
    configured = [key.get_secret_value().encode("ascii") for key in explicit]
    derived = [key for key in secret_ring(s).fernet_keys(OAUTH_TOKENS) if key not in configured]
    return [*configured, *derived]


def state_keys(s: Settings) -> tuple[bytes, ...]:
    """The Fernet keys sealing pending sign-ins (`wardgate.oauth.state`), the current secret's first."""
    return secret_ring(s).fernet_keys(OAUTH_LOGIN_STATE)
