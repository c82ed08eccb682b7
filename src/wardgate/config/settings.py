"""`Settings`: every configuration variable, with Open WebUI's names, parsed into a typed value once.

Each field is one variable: its Open WebUI name (the field's alias, `AliasChoices` for deprecated
names), its default and its parse rule (a field type from `fields`). A field holds the parsed value
(a `Rate`, a frozenset of `Role`, a tuple of origins, `TrustedProxies`...), never text a component
would have to parse again.
Reading the environment and the checks that span several fields live in `loading`.

This module is long on purpose: it is the table of every variable, kept in one place so that each
name appears exactly once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, InstanceOf, SecretStr, ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from wardgate.config import network, values
from wardgate.config.fields import (
    Bool,
    ClaimPath,
    Directory,
    FilePath,
    Groups,
    HeaderName,
    HeaderSecret,
    LdapAttribute,
    Lifetime,
    Name,
    OptionalBool,
    ProviderUrl,
    RateValue,
    Roles,
    SameSite,
    Scopes,
    Secret,
    Separator,
    Text,
    UpstreamUrl,
    WebUrl,
    matching,
    parsed,
    same,
)
from wardgate.config.forward_auth import ForwardAuth, load_forward_auth
from wardgate.config.model_access import ModelAccess, load_model_access
from wardgate.config.network import TrustedProxies
from wardgate.config.values import Role, parse_rate, printable

SECRET_KEY_FILENAME = ".webui_secret_key"  # noqa: S105 - a file name
DEFAULT_PASSWORD_PATTERN = r"^(?=.*[a-z])(?=.*[A-Z])(?=.*\d)(?=.*[^\w\s]).{8,}$"  # noqa: S105 - a policy
USERS_AND_ADMINS = frozenset({Role.USER, Role.ADMIN})


def _env(*names: str) -> Any:
    """The variable name(s) a field is read from, the first being the current one."""
    return AliasChoices(*names) if len(names) > 1 else names[0]


class Settings(BaseSettings):
    """The whole configuration of one wardgate process, frozen once loaded."""

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, populate_by_name=True, validate_default=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what `load_settings` hands over: it alone reads the environment and `.env`."""
        return (init_settings,)

    # --- secrets and sessions -------------------------------------------------------------
    webui_secret_key: Secret | None = Field(
        None, validation_alias=_env("WEBUI_SECRET_KEY", "WEBUI_JWT_SECRET_KEY")
    )
    webui_secret_key_fallbacks: Annotated[
        tuple[SecretStr, ...],
        parsed(lambda v: tuple(SecretStr(k) for k in values.secret_list(v)), limit=8 * 4097),
    ] = Field((), validation_alias=_env("WEBUI_SECRET_KEY_FALLBACKS"))
    jwt_expires_in: Lifetime = Field(timedelta(days=7), validation_alias=_env("JWT_EXPIRES_IN"))
    webui_auth: Bool = Field(True, validation_alias=_env("WEBUI_AUTH"))

    # --- sign-up and sign-in surface ------------------------------------------------------------
    enable_signup: Bool = Field(True, validation_alias=_env("ENABLE_SIGNUP"))
    default_user_role: Annotated[Role, parsed(str.lower)] = Field(
        Role.PENDING, validation_alias=_env("DEFAULT_USER_ROLE")
    )
    enable_password_auth: Bool = Field(True, validation_alias=_env("ENABLE_PASSWORD_AUTH"))
    enable_login_form: Bool = Field(True, validation_alias=_env("ENABLE_LOGIN_FORM"))
    webui_admin_email: Annotated[str, parsed(values.email_address)] | None = Field(
        None, validation_alias=_env("WEBUI_ADMIN_EMAIL")
    )
    webui_admin_password: Secret | None = Field(None, validation_alias=_env("WEBUI_ADMIN_PASSWORD"))
    webui_admin_name: Name = Field("Admin", validation_alias=_env("WEBUI_ADMIN_NAME"))

    # --- passwords ------------------------------------------------------------------------------
    enable_password_validation: Bool = Field(False, validation_alias=_env("ENABLE_PASSWORD_VALIDATION"))
    password_validation_regex_pattern: Annotated[re.Pattern[str], parsed(same)] = Field(
        re.compile(DEFAULT_PASSWORD_PATTERN), validation_alias=_env("PASSWORD_VALIDATION_REGEX_PATTERN")
    )
    password_validation_hint: Text = Field("", validation_alias=_env("PASSWORD_VALIDATION_HINT"))
    password_min_length: int = Field(8, ge=1, le=256, validation_alias=_env("PASSWORD_MIN_LENGTH"))
    password_hash_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("PASSWORD_HASH_CONCURRENCY"))

    # --- storage --------------------------------------------------------------------------------
    data_dir: Directory = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    database_url: Annotated[str, parsed(network.database_url)] | None = Field(
        None, validation_alias=_env("DATABASE_URL")
    )
    session_sync_interval: float = Field(2.0, gt=0, le=60, validation_alias=_env("SESSION_SYNC_INTERVAL"))
    max_sessions_per_user: int = Field(100, ge=1, le=10_000, validation_alias=_env("MAX_SESSIONS_PER_USER"))
    audit_retention_days: int = Field(90, ge=1, le=36_500, validation_alias=_env("AUDIT_RETENTION_DAYS"))
    database_pool_size: int = Field(10, ge=1, le=1000, validation_alias=_env("DATABASE_POOL_SIZE"))
    database_pool_max_overflow: int = Field(
        10, ge=0, le=1000, validation_alias=_env("DATABASE_POOL_MAX_OVERFLOW")
    )
    database_pool_timeout: float = Field(30, gt=0, le=600, validation_alias=_env("DATABASE_POOL_TIMEOUT"))
    database_pool_recycle: int = Field(1800, ge=-1, le=86400, validation_alias=_env("DATABASE_POOL_RECYCLE"))
    redis_url: Annotated[str, parsed(network.redis_url)] | None = Field(
        None, validation_alias=_env("REDIS_URL")
    )
    redis_key_prefix: Annotated[
        str,
        parsed(
            lambda v: matching(
                re.compile(r"[\x21-\x7e]{1,64}"), v, "up to 64 printable characters, no spaces"
            )
        ),
    ] = Field("wardgate", validation_alias=_env("REDIS_KEY_PREFIX"))

    # --- rate limits ----------------------------------------------------------------------------
    signin_rate_limit: RateValue = Field(parse_rate("5/3m"), validation_alias=_env("SIGNIN_RATE_LIMIT"))
    signin_ip_rate_limit: RateValue = Field(
        parse_rate("20/3m"), validation_alias=_env("SIGNIN_IP_RATE_LIMIT")
    )
    signup_rate_limit: RateValue = Field(parse_rate("10/1h"), validation_alias=_env("SIGNUP_RATE_LIMIT"))
    password_change_rate_limit: RateValue = Field(
        parse_rate("5/15m"), validation_alias=_env("PASSWORD_CHANGE_RATE_LIMIT")
    )
    auth_failure_rate_limit: RateValue = Field(
        parse_rate("30/1m"), validation_alias=_env("AUTH_FAILURE_RATE_LIMIT")
    )

    # --- LDAP and Active Directory (Open WebUI's names) ----------------------------------------------
    enable_ldap: Bool = Field(False, validation_alias=_env("ENABLE_LDAP"))
    ldap_server_label: Name = Field("LDAP Server", validation_alias=_env("LDAP_SERVER_LABEL"))
    ldap_server_host: Annotated[str, parsed(values.host_name)] = Field(
        "localhost", validation_alias=_env("LDAP_SERVER_HOST")
    )
    ldap_server_port: int | None = Field(None, ge=1, le=65535, validation_alias=_env("LDAP_SERVER_PORT"))
    ldap_attribute_for_mail: LdapAttribute = Field("mail", validation_alias=_env("LDAP_ATTRIBUTE_FOR_MAIL"))
    ldap_attribute_for_username: LdapAttribute = Field(
        "uid", validation_alias=_env("LDAP_ATTRIBUTE_FOR_USERNAME")
    )
    ldap_app_dn: Text | None = Field(None, validation_alias=_env("LDAP_APP_DN"))
    ldap_app_password: Secret | None = Field(None, validation_alias=_env("LDAP_APP_PASSWORD"))
    ldap_search_base: Text | None = Field(None, validation_alias=_env("LDAP_SEARCH_BASE"))
    ldap_search_filters: Annotated[str, parsed(values.ldap_filter, limit=1024)] | None = Field(
        None, validation_alias=_env("LDAP_SEARCH_FILTERS", "LDAP_SEARCH_FILTER")
    )
    ldap_use_tls: Bool = Field(True, validation_alias=_env("LDAP_USE_TLS"))
    ldap_ca_cert_file: FilePath | None = Field(None, validation_alias=_env("LDAP_CA_CERT_FILE"))
    ldap_validate_cert: Bool = Field(True, validation_alias=_env("LDAP_VALIDATE_CERT"))
    ldap_ciphers: Annotated[str, parsed(values.cipher_list)] | None = Field(
        None, validation_alias=_env("LDAP_CIPHERS")
    )
    enable_ldap_group_management: Bool = Field(False, validation_alias=_env("ENABLE_LDAP_GROUP_MANAGEMENT"))
    ldap_attribute_for_groups: LdapAttribute = Field(
        "memberOf", validation_alias=_env("LDAP_ATTRIBUTE_FOR_GROUPS")
    )

    # --- second factors (wardgate's own) --------------------------------------------------------
    mfa_required_roles: Roles = Field(frozenset(), validation_alias=_env("MFA_REQUIRED_ROLES"))
    mfa_step_up_max_age: Annotated[timedelta, parsed(values.parse_step_up_age)] = Field(
        timedelta(minutes=10), validation_alias=_env("MFA_STEP_UP_MAX_AGE")
    )
    mfa_rate_limit: RateValue = Field(parse_rate("10/5m"), validation_alias=_env("MFA_RATE_LIMIT"))
    mfa_encryption_key: (
        Annotated[tuple[SecretStr, ...], parsed(lambda v: tuple(SecretStr(k) for k in values.fernet_keys(v)))]
        | None
    ) = Field(None, validation_alias=_env("MFA_ENCRYPTION_KEY"))
    oauth_mfa_acr_values: Scopes = Field((), validation_alias=_env("OAUTH_MFA_ACR_VALUES"))

    # --- cookies --------------------------------------------------------------------------------
    webui_session_cookie_same_site: Annotated[SameSite, parsed(str.lower)] = Field(
        "lax", validation_alias=_env("WEBUI_SESSION_COOKIE_SAME_SITE")
    )
    webui_session_cookie_secure: OptionalBool = Field(
        None, validation_alias=_env("WEBUI_SESSION_COOKIE_SECURE")
    )
    session_cookie_domain: Annotated[str, parsed(values.cookie_domain)] | None = Field(
        None, validation_alias=_env("SESSION_COOKIE_DOMAIN")
    )
    webui_auth_cookie_same_site: Annotated[SameSite, parsed(str.lower)] | None = Field(
        None, validation_alias=_env("WEBUI_AUTH_COOKIE_SAME_SITE")
    )
    webui_auth_cookie_secure: OptionalBool = Field(None, validation_alias=_env("WEBUI_AUTH_COOKIE_SECURE"))

    # --- the site -------------------------------------------------------------------------------
    webui_url: Annotated[str, parsed(network.site_url)] | None = Field(
        None, validation_alias=_env("WEBUI_URL")
    )
    webui_name: Name = Field("wardgate", validation_alias=_env("WEBUI_NAME"))
    host: Annotated[str, parsed(values.listen_host)] = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("PORT"))

    # --- HTTP hardening -------------------------------------------------------------------------
    cors_allow_origin: Annotated[tuple[str, ...], parsed(network.cors_origins)] = Field(
        (), validation_alias=_env("CORS_ALLOW_ORIGIN")
    )
    forwarded_allow_ips: Annotated[InstanceOf[TrustedProxies], parsed(network.trusted_proxies)] = Field(
        network.trusted_proxies("127.0.0.1"), validation_alias=_env("FORWARDED_ALLOW_IPS")
    )
    max_header_size: int = Field(32 * 1024, ge=4096, le=1024**2, validation_alias=_env("MAX_HEADER_SIZE"))
    max_body_size: int = Field(4 * 1024 * 1024, ge=1024, le=1024**3, validation_alias=_env("MAX_BODY_SIZE"))
    client_header_timeout: float = Field(10, gt=0, le=300, validation_alias=_env("CLIENT_HEADER_TIMEOUT"))
    client_body_timeout: float = Field(60, gt=0, le=3600, validation_alias=_env("CLIENT_BODY_TIMEOUT"))
    send_timeout: float = Field(60, gt=0, le=3600, validation_alias=_env("SEND_TIMEOUT"))
    keep_alive_timeout: int = Field(5, ge=1, le=300, validation_alias=_env("KEEP_ALIVE_TIMEOUT"))
    max_connections_per_ip: int = Field(
        128, ge=1, le=100_000, validation_alias=_env("MAX_CONNECTIONS_PER_IP")
    )
    graceful_shutdown_timeout: int = Field(
        30, ge=0, le=3600, validation_alias=_env("GRACEFUL_SHUTDOWN_TIMEOUT")
    )
    rate_limit_ipv6_prefix: int = Field(64, ge=32, le=128, validation_alias=_env("RATE_LIMIT_IPV6_PREFIX"))
    ssl_certfile: FilePath | None = Field(None, validation_alias=_env("SSL_CERTFILE"))
    ssl_keyfile: FilePath | None = Field(None, validation_alias=_env("SSL_KEYFILE"))
    secret_key_source: Literal["environment", "file"] = "environment"  # noqa: S105
    security_headers: dict[str, str | None] = Field(default_factory=dict)
    """The security-header variables, checked (None: unset, "": switched off); see `headers`."""

    # --- email (password reset links) ------------------------------------------------------------
    smtp_host: Annotated[str, parsed(values.host_name)] | None = Field(
        None, validation_alias=_env("SMTP_HOST")
    )
    smtp_port: int = Field(587, ge=1, le=65535, validation_alias=_env("SMTP_PORT"))
    smtp_security: Annotated[Literal["starttls", "tls", "none"], parsed(str.lower)] = Field(
        "starttls", validation_alias=_env("SMTP_SECURITY")
    )
    smtp_username: Name = Field("", validation_alias=_env("SMTP_USERNAME"))
    smtp_password: Secret | None = Field(None, validation_alias=_env("SMTP_PASSWORD"))
    smtp_from: Annotated[str, parsed(values.email_address)] | None = Field(
        None, validation_alias=_env("SMTP_FROM")
    )
    smtp_ca_cert_file: FilePath | None = Field(None, validation_alias=_env("SMTP_CA_CERT_FILE"))
    smtp_timeout: float = Field(10, gt=0, le=120, validation_alias=_env("SMTP_TIMEOUT"))
    password_reset_expires_in: Annotated[timedelta, parsed(values.parse_step_up_age)] = Field(
        timedelta(minutes=30), validation_alias=_env("PASSWORD_RESET_EXPIRES_IN")
    )
    password_reset_rate_limit: RateValue = Field(
        parse_rate("3/1h"), validation_alias=_env("PASSWORD_RESET_RATE_LIMIT")
    )

    # --- operations: processes, metrics, traces -----------------------------------------------
    uvicorn_workers: int = Field(1, ge=1, le=64, validation_alias=_env("UVICORN_WORKERS"))
    metrics_token: HeaderSecret | None = Field(None, validation_alias=_env("METRICS_TOKEN"))
    metrics_allow_ips: Annotated[InstanceOf[TrustedProxies], parsed(network.trusted_proxies)] = Field(
        TrustedProxies(), validation_alias=_env("METRICS_ALLOW_IPS")
    )
    enable_otel: Bool = Field(False, validation_alias=_env("ENABLE_OTEL"))
    enable_otel_traces: Bool = Field(False, validation_alias=_env("ENABLE_OTEL_TRACES"))
    otel_exporter_otlp_endpoint: UpstreamUrl = Field(
        "http://localhost:4317", validation_alias=_env("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    otel_exporter_otlp_insecure: Bool = Field(False, validation_alias=_env("OTEL_EXPORTER_OTLP_INSECURE"))
    otel_otlp_span_exporter: Annotated[Literal["grpc", "http"], parsed(str.lower)] = Field(
        "grpc", validation_alias=_env("OTEL_OTLP_SPAN_EXPORTER")
    )
    otel_service_name: Name = Field("wardgate", validation_alias=_env("OTEL_SERVICE_NAME"))
    otel_traces_sampler: Annotated[
        Literal[
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ],
        parsed(str.lower),
    ] = Field("parentbased_always_on", validation_alias=_env("OTEL_TRACES_SAMPLER"))
    otel_traces_sampler_arg: float = Field(1.0, ge=0, le=1, validation_alias=_env("OTEL_TRACES_SAMPLER_ARG"))
    otel_basic_auth_username: Name = Field("", validation_alias=_env("OTEL_BASIC_AUTH_USERNAME"))
    otel_basic_auth_password: Secret | None = Field(None, validation_alias=_env("OTEL_BASIC_AUTH_PASSWORD"))

    # --- single sign-on (OAuth 2.0 / OpenID Connect; docs/sso.md) ------------------------------
    # A provider is on when its client id and secret are set; `sign_on.sign_on_problems` refuses
    # half a provider. GOOGLE_OPENID_PROVIDER_URL and GITHUB_BASE_URL / GITHUB_API_BASE_URL are
    # wardgate's own additions (tests, GitHub Enterprise).
    google_client_id: Text | None = Field(None, validation_alias=_env("GOOGLE_CLIENT_ID"))
    google_client_secret: Secret | None = Field(None, validation_alias=_env("GOOGLE_CLIENT_SECRET"))
    google_oauth_scope: Scopes = Field(
        ("openid", "email", "profile"), validation_alias=_env("GOOGLE_OAUTH_SCOPE")
    )
    google_redirect_uri: WebUrl | None = Field(None, validation_alias=_env("GOOGLE_REDIRECT_URI"))
    google_openid_provider_url: ProviderUrl = Field(
        "https://accounts.google.com/.well-known/openid-configuration",
        validation_alias=_env("GOOGLE_OPENID_PROVIDER_URL"),
    )
    microsoft_client_id: Text | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_ID"))
    microsoft_client_secret: Secret | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_SECRET"))
    microsoft_client_tenant_id: Text | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_TENANT_ID"))
    microsoft_client_login_base_url: ProviderUrl = Field(
        "https://login.microsoftonline.com", validation_alias=_env("MICROSOFT_CLIENT_LOGIN_BASE_URL")
    )
    microsoft_oauth_scope: Scopes = Field(
        ("openid", "email", "profile"), validation_alias=_env("MICROSOFT_OAUTH_SCOPE")
    )
    microsoft_redirect_uri: WebUrl | None = Field(None, validation_alias=_env("MICROSOFT_REDIRECT_URI"))
    github_client_id: Text | None = Field(None, validation_alias=_env("GITHUB_CLIENT_ID"))
    github_client_secret: Secret | None = Field(None, validation_alias=_env("GITHUB_CLIENT_SECRET"))
    github_client_scope: Scopes = Field(("user:email",), validation_alias=_env("GITHUB_CLIENT_SCOPE"))
    github_client_redirect_uri: WebUrl | None = Field(
        None, validation_alias=_env("GITHUB_CLIENT_REDIRECT_URI")
    )
    github_base_url: ProviderUrl = Field("https://github.com", validation_alias=_env("GITHUB_BASE_URL"))
    github_api_base_url: ProviderUrl = Field(
        "https://api.github.com", validation_alias=_env("GITHUB_API_BASE_URL")
    )
    oauth_client_id: Text | None = Field(None, validation_alias=_env("OAUTH_CLIENT_ID"))
    oauth_client_secret: Secret | None = Field(None, validation_alias=_env("OAUTH_CLIENT_SECRET"))
    openid_provider_url: ProviderUrl | None = Field(None, validation_alias=_env("OPENID_PROVIDER_URL"))
    oauth_provider_name: Name = Field("SSO", validation_alias=_env("OAUTH_PROVIDER_NAME"))
    oauth_scopes: Scopes = Field(("openid", "email", "profile"), validation_alias=_env("OAUTH_SCOPES"))
    openid_redirect_uri: WebUrl | None = Field(None, validation_alias=_env("OPENID_REDIRECT_URI"))
    oauth_code_challenge_method: (
        Annotated[
            Literal["S256"],
            parsed(lambda v: matching(re.compile("S256"), v, "S256 (PKCE with S256 is always used)")),
        ]
        | None
    ) = Field(None, validation_alias=_env("OAUTH_CODE_CHALLENGE_METHOD"))
    oauth_token_endpoint_auth_method: (
        Annotated[Literal["client_secret_basic", "client_secret_post", "none"], parsed(str.lower)] | None
    ) = Field(None, validation_alias=_env("OAUTH_TOKEN_ENDPOINT_AUTH_METHOD"))
    enable_oauth_signup: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_SIGNUP"))
    oauth_merge_accounts_by_email: Bool = Field(False, validation_alias=_env("OAUTH_MERGE_ACCOUNTS_BY_EMAIL"))
    oauth_allowed_domains: Annotated[tuple[str, ...], parsed(values.email_domains)] = Field(
        ("*",), validation_alias=_env("OAUTH_ALLOWED_DOMAINS")
    )
    enable_oauth_role_management: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_ROLE_MANAGEMENT"))
    oauth_roles_claim: ClaimPath = Field("roles", validation_alias=_env("OAUTH_ROLES_CLAIM"))
    oauth_roles_separator: Separator = Field(",", validation_alias=_env("OAUTH_ROLES_SEPARATOR"))
    oauth_allowed_roles: tuple[str, ...] = Field(
        ("user", "admin"), validation_alias=_env("OAUTH_ALLOWED_ROLES")
    )
    oauth_admin_roles: tuple[str, ...] = Field(("admin",), validation_alias=_env("OAUTH_ADMIN_ROLES"))
    enable_oauth_group_management: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_GROUP_MANAGEMENT"))
    oauth_groups_claim: ClaimPath = Field(
        "groups", validation_alias=_env("OAUTH_GROUPS_CLAIM", "OAUTH_GROUP_CLAIM")
    )
    oauth_groups_separator: Separator = Field(";", validation_alias=_env("OAUTH_GROUPS_SEPARATOR"))
    oauth_blocked_groups: Annotated[tuple[str, ...], parsed(values.json_or_comma_list)] = Field(
        (), validation_alias=_env("OAUTH_BLOCKED_GROUPS")
    )
    oauth_email_claim: ClaimPath = Field("email", validation_alias=_env("OAUTH_EMAIL_CLAIM"))
    oauth_username_claim: ClaimPath = Field("name", validation_alias=_env("OAUTH_USERNAME_CLAIM"))
    oauth_sub_claim: ClaimPath | None = Field(None, validation_alias=_env("OAUTH_SUB_CLAIM"))
    oauth_session_token_encryption_key: (
        Annotated[tuple[SecretStr, ...], parsed(lambda v: tuple(SecretStr(k) for k in values.fernet_keys(v)))]
        | None
    ) = Field(None, validation_alias=_env("OAUTH_SESSION_TOKEN_ENCRYPTION_KEY"))
    openid_end_session_endpoint: ProviderUrl | None = Field(
        None, validation_alias=_env("OPENID_END_SESSION_ENDPOINT")
    )
    webui_auth_signout_redirect_url: WebUrl | None = Field(
        None, validation_alias=_env("WEBUI_AUTH_SIGNOUT_REDIRECT_URL")
    )

    # --- upstreams (reverse proxy) --------------------------------------------------------------
    ollama_base_url: UpstreamUrl | None = Field(None, validation_alias=_env("OLLAMA_BASE_URL"))
    openai_api_base_url: UpstreamUrl | None = Field(None, validation_alias=_env("OPENAI_API_BASE_URL"))
    openai_api_key: HeaderSecret | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    upstream_url: UpstreamUrl | None = Field(None, validation_alias=_env("UPSTREAM_URL"))
    ollama_allowed_roles: Roles = Field(USERS_AND_ADMINS, validation_alias=_env("OLLAMA_ALLOWED_ROLES"))
    openai_allowed_roles: Roles = Field(USERS_AND_ADMINS, validation_alias=_env("OPENAI_ALLOWED_ROLES"))
    upstream_allowed_roles: Roles = Field(USERS_AND_ADMINS, validation_alias=_env("UPSTREAM_ALLOWED_ROLES"))
    ollama_allowed_groups: Groups = Field(frozenset(), validation_alias=_env("OLLAMA_ALLOWED_GROUPS"))
    openai_allowed_groups: Groups = Field(frozenset(), validation_alias=_env("OPENAI_ALLOWED_GROUPS"))
    upstream_allowed_groups: Groups = Field(frozenset(), validation_alias=_env("UPSTREAM_ALLOWED_GROUPS"))
    upstream_timeout: float = Field(300, gt=0, le=86400, validation_alias=_env("UPSTREAM_TIMEOUT"))
    model_access_file: Annotated[InstanceOf[ModelAccess], parsed(load_model_access)] = Field(
        ModelAccess(), validation_alias=_env("MODEL_ACCESS_FILE")
    )
    upstream_signout_path: Annotated[str, parsed(values.request_path, limit=256)] = Field(
        "/api/v1/auths/signout", validation_alias=_env("UPSTREAM_SIGNOUT_PATH")
    )
    forward_auth_file: Annotated[InstanceOf[ForwardAuth], parsed(load_forward_auth)] | None = Field(
        None, validation_alias=_env("FORWARD_AUTH_FILE")
    )
    model_request_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=1024**3, validation_alias=_env("MODEL_REQUEST_MAX_BYTES")
    )
    usage_retention_days: int = Field(400, ge=1, le=36_500, validation_alias=_env("USAGE_RETENTION_DAYS"))
    forward_underscore_headers: Bool = Field(False, validation_alias=_env("FORWARD_UNDERSCORE_HEADERS"))
    proxy_enforce_security_headers: Bool = Field(
        False, validation_alias=_env("PROXY_ENFORCE_SECURITY_HEADERS")
    )
    webui_auth_trusted_email_header: HeaderName = Field(
        "X-Forwarded-Email", validation_alias=_env("WEBUI_AUTH_TRUSTED_EMAIL_HEADER")
    )
    webui_auth_trusted_name_header: HeaderName = Field(
        "X-Forwarded-Name", validation_alias=_env("WEBUI_AUTH_TRUSTED_NAME_HEADER")
    )
    webui_auth_trusted_groups_header: HeaderName = Field(
        "X-Forwarded-Groups", validation_alias=_env("WEBUI_AUTH_TRUSTED_GROUPS_HEADER")
    )
    webui_auth_trusted_role_header: HeaderName = Field(
        "X-Forwarded-Role", validation_alias=_env("WEBUI_AUTH_TRUSTED_ROLE_HEADER")
    )
    # Open WebUI's server calling the model servers through wardgate for a person (service keys).
    forward_user_info_header_jwt_secret: Secret | None = Field(
        None, validation_alias=_env("FORWARD_USER_INFO_HEADER_JWT_SECRET")
    )
    forward_user_info_header_jwt: HeaderName = Field(
        "X-OpenWebUI-User-Jwt", validation_alias=_env("FORWARD_USER_INFO_HEADER_JWT")
    )
    forward_user_info_header_user_email: HeaderName = Field(
        "X-OpenWebUI-User-Email", validation_alias=_env("FORWARD_USER_INFO_HEADER_USER_EMAIL")
    )
    forward_user_info_header_user_id: HeaderName = Field(
        "X-OpenWebUI-User-Id", validation_alias=_env("FORWARD_USER_INFO_HEADER_USER_ID")
    )
    forward_user_info_header_user_name: HeaderName = Field(
        "X-OpenWebUI-User-Name", validation_alias=_env("FORWARD_USER_INFO_HEADER_USER_NAME")
    )
    forward_user_info_header_user_role: HeaderName = Field(
        "X-OpenWebUI-User-Role", validation_alias=_env("FORWARD_USER_INFO_HEADER_USER_ROLE")
    )
    forward_session_info_header_chat_id: HeaderName = Field(
        "X-OpenWebUI-Chat-Id", validation_alias=_env("FORWARD_SESSION_INFO_HEADER_CHAT_ID")
    )
    wardgate_path_prefix: Annotated[
        str,
        parsed(
            lambda v: matching(
                re.compile(r"(/[A-Za-z0-9._~-]+)+"),
                v,
                "a path such as /wardgate (no trailing slash), or empty",
            )
        ),
    ] = Field("", validation_alias=_env("WARDGATE_PATH_PREFIX"))

    # --- API keys (docs/api-keys.md) -------------------------------------------------------------
    enable_api_keys: Bool = Field(False, validation_alias=_env("ENABLE_API_KEYS"))
    user_permissions_features_api_keys: Bool = Field(
        False, validation_alias=_env("USER_PERMISSIONS_FEATURES_API_KEYS")
    )
    custom_api_key_header: Annotated[str, parsed(str.lower)] = Field(
        "x-api-key", validation_alias=_env("CUSTOM_API_KEY_HEADER")
    )
    enable_api_keys_endpoint_restrictions: Bool = Field(
        False,
        validation_alias=_env(
            "ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS", "ENABLE_API_KEY_ENDPOINT_RESTRICTIONS"
        ),
    )
    api_keys_allowed_endpoints: Annotated[
        tuple[str, ...], parsed(lambda v: values.path_prefixes(values.split_list(v)))
    ] = Field((), validation_alias=_env("API_KEYS_ALLOWED_ENDPOINTS", "API_KEY_ALLOWED_ENDPOINTS"))
    api_key_rate_limit: RateValue = Field(parse_rate("600/1m"), validation_alias=_env("API_KEY_RATE_LIMIT"))

    global_log_level: Annotated[
        Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"], parsed(str.upper)
    ] = Field("INFO", validation_alias=_env("GLOBAL_LOG_LEVEL"))

    # --- rules a field type cannot say ------------------------------------------------------------

    @field_validator("custom_api_key_header")
    @classmethod
    def _api_key_header(cls, value: str) -> str:
        # The CSRF check exempts requests carrying this header, which is sound only for a name a
        # page cannot send cross-site without a CORS preflight (Fetch standard: CORS-safelisted
        # request headers) and that no proxy or browser sets on its own.
        standard = {"accept", "accept-language", "authorization", "content-language", "content-type"}
        standard |= {"cookie", "host", "origin", "range", "referer", "user-agent", "forwarded", "x-real-ip"}
        reserved = value in standard or value.startswith(("sec-", "proxy-", "x-forwarded-"))
        if reserved or not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", value):
            raise ValueError("expected a custom header name such as x-api-key (not a standard header)")
        return value

    @field_validator("oauth_allowed_roles", "oauth_admin_roles", mode="before")
    @classmethod
    def _provider_roles(cls, value: object, info: ValidationInfo) -> object:
        """Split by `OAUTH_ROLES_SEPARATOR` (read before these fields), as Open WebUI does."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            raise PydanticUseDefault()
        separator = info.data.get("oauth_roles_separator", ",")
        return values.split_list(printable(value.strip(), limit=4096), separator)

    @field_validator("google_oauth_scope", "microsoft_oauth_scope", "oauth_scopes")
    @classmethod
    def _openid_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("must include the openid scope")
        return value

    @field_validator("password_validation_regex_pattern", mode="before")
    @classmethod
    def _compiles(cls, value: object) -> object:
        if isinstance(value, str) and value.strip():
            try:
                return re.compile(value.strip())
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    # --- derived values -------------------------------------------------------------------------

    @property
    def route_prefix(self) -> str:
        """Where wardgate's own pages and API live (`WARDGATE_PATH_PREFIX`, "" = at the root)."""
        return self.wardgate_path_prefix

    @property
    def secret_key(self) -> str:
        """The JWT signing key (always present after `load_settings`)."""
        if self.webui_secret_key is None:
            raise RuntimeError("secret key not resolved; build Settings with load_settings()")
        return self.webui_secret_key.get_secret_value()

    @property
    def metrics_readable(self) -> bool:
        """Whether anyone may read `/metrics` (`METRICS_TOKEN` or `METRICS_ALLOW_IPS`). Without
        either, the route does not exist, and requests, authentications, upstream calls and tokens
        are not measured (refusals of limits and budgets still are: they are few)."""
        allowed = self.metrics_allow_ips
        return self.metrics_token is not None or allowed.trust_all or bool(allowed.networks)

    @property
    def effective_database_url(self) -> str:
        """`DATABASE_URL`, or an SQLite file in `DATA_DIR`."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'wardgate.db').resolve()}"

    @property
    def site_origin(self) -> str | None:
        """The origin of `WEBUI_URL` (None when it is not set)."""
        return network.origin_of(self.webui_url) if self.webui_url else None

    @property
    def signup_open(self) -> bool:
        """Whether people may sign up themselves (after the first account, which may always)."""
        return self.enable_signup and self.enable_login_form and self.enable_password_auth

    @property
    def auth_cookie_same_site(self) -> SameSite:
        """SameSite of the `token` cookie (falls back to the session cookie value)."""
        return self.webui_auth_cookie_same_site or self.webui_session_cookie_same_site

    @property
    def auth_cookie_secure(self) -> bool | None:
        """Secure flag of the `token` cookie; None means "when the request is HTTPS"."""
        if self.webui_auth_cookie_secure is not None:
            return self.webui_auth_cookie_secure
        return self.webui_session_cookie_secure

    @property
    def password_pattern(self) -> re.Pattern[str] | None:
        """The password policy regex, when `ENABLE_PASSWORD_VALIDATION` is on."""
        return self.password_validation_regex_pattern if self.enable_password_validation else None

    @property
    def api_key_endpoints(self) -> tuple[str, ...] | None:
        """Path prefixes every API key is limited to (None: no global limit; empty: nothing)."""
        listed = self.api_keys_allowed_endpoints
        if self.enable_api_keys_endpoint_restrictions or listed:
            return listed
        return None


SECRET_FIELDS = frozenset(
    {
        "webui_secret_key",
        "webui_admin_password",
        "openai_api_key",
        "google_client_secret",
        "microsoft_client_secret",
        "github_client_secret",
        "oauth_client_secret",
        "oauth_session_token_encryption_key",
        "mfa_encryption_key",
        "ldap_app_password",
        "webui_secret_key_fallbacks",
        "metrics_token",
        "otel_basic_auth_password",
        "smtp_password",
        "forward_user_info_header_jwt_secret",
    }
)
URL_FIELDS = frozenset({"redis_url", "database_url"})  # may carry a password: shown masked
LIST_SEPARATORS = {"cors_allow_origin": ";", "google_oauth_scope": " ", "microsoft_oauth_scope": " "}
LIST_SEPARATORS |= {"github_client_scope": " ", "oauth_scopes": " "}
