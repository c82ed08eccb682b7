"""Settings: every configuration variable, with Open WebUI's names and parse rules, read once.

`load_settings()` is the only reader of the environment (and of a `.env` file in the working
directory). It validates everything at once and raises `ConfigError` listing every bad variable,
its value (secrets redacted) and the accepted form. Nothing else in wardgate reads the environment.

This module is long on purpose: it is the table of every variable (one field each, with its Open
WebUI name, default and parse rule), kept in one place so that each name appears exactly once.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from wardgate.config.headers import HEADER_ENV_NAMES, header_problems
from wardgate.config.sign_on import sign_on_problems
from wardgate.errors import ConfigError
from wardgate.identity.key_material import check_path_prefixes
from wardgate.proxy.upstreams import check_upstream_url
from wardgate.security.ratelimit import parse_rate

Role = Literal["pending", "user", "admin"]
SameSite = Literal["lax", "strict", "none"]

SECRET_KEY_FILENAME = ".webui_secret_key"  # noqa: S105 - a file name
MIN_SECRET_BYTES = 32
DEFAULT_PASSWORD_PATTERN = r"^(?=.*[a-z])(?=.*[A-Z])(?=.*\d)(?=.*[^\w\s]).{8,}$"  # noqa: S105 - a policy

# Open WebUI's duration grammar: terms like 30m, 24h, 1d12h, 1.5h; "-1" (or "0") means no expiry.
_DURATION_TERM = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_FORM = "a duration such as 30m, 24h, 7d, 4w or 1d12h (units ms, s, m, h, d, w), or -1 for no expiry"


def parse_duration(value: str) -> timedelta | None:
    """Parse Open WebUI's duration format; None means "never expires"."""
    text = value.strip().replace(" ", "")
    if text in ("-1", "0"):
        return None
    if not _DURATION.fullmatch(text):
        raise ValueError(f"expected {DURATION_FORM}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_TERM.findall(text))
    if seconds < 1:
        raise ValueError("a lifetime must be at least one second")
    return timedelta(seconds=seconds)


def _parse_bool(value: object) -> object:
    """Open WebUI's rule (`true`, any case) but refuse anything that is neither true nor false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "":
        raise PydanticUseDefault()
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("expected true or false")


def _empty_is_default(value: object) -> object:
    if isinstance(value, str) and value.strip() == "":
        raise PydanticUseDefault()
    return value.strip() if isinstance(value, str) else value


def _lower(value: object) -> object:
    value = _empty_is_default(value)
    return value.lower() if isinstance(value, str) else value


def _duration(value: object) -> object:
    value = _empty_is_default(value)
    if isinstance(value, str):
        return parse_duration(value)
    return value


def _rate(value: str) -> str:
    parse_rate(value)
    return value


Bool = Annotated[bool, BeforeValidator(_parse_bool)]
Rate = Annotated[str, BeforeValidator(_empty_is_default), AfterValidator(_rate)]
OptionalBool = Annotated[bool | None, BeforeValidator(_parse_bool)]
Text = Annotated[str, BeforeValidator(_empty_is_default)]
Lifetime = Annotated[timedelta | None, BeforeValidator(_duration)]


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
    webui_secret_key: SecretStr | None = Field(
        None, validation_alias=_env("WEBUI_SECRET_KEY", "WEBUI_JWT_SECRET_KEY")
    )
    jwt_expires_in: Lifetime = Field(timedelta(days=7), validation_alias=_env("JWT_EXPIRES_IN"))
    webui_auth: Bool = Field(True, validation_alias=_env("WEBUI_AUTH"))

    # --- sign-up and sign-in surface ------------------------------------------------------------
    enable_signup: Bool = Field(True, validation_alias=_env("ENABLE_SIGNUP"))
    default_user_role: Annotated[Role, BeforeValidator(_lower)] = Field(
        "pending", validation_alias=_env("DEFAULT_USER_ROLE")
    )
    enable_password_auth: Bool = Field(True, validation_alias=_env("ENABLE_PASSWORD_AUTH"))
    enable_login_form: Bool = Field(True, validation_alias=_env("ENABLE_LOGIN_FORM"))
    webui_admin_email: Text | None = Field(None, validation_alias=_env("WEBUI_ADMIN_EMAIL"))
    webui_admin_password: SecretStr | None = Field(None, validation_alias=_env("WEBUI_ADMIN_PASSWORD"))
    webui_admin_name: Text = Field("Admin", validation_alias=_env("WEBUI_ADMIN_NAME"))

    # --- passwords ------------------------------------------------------------------------------
    enable_password_validation: Bool = Field(False, validation_alias=_env("ENABLE_PASSWORD_VALIDATION"))
    password_validation_regex_pattern: Text = Field(
        DEFAULT_PASSWORD_PATTERN, validation_alias=_env("PASSWORD_VALIDATION_REGEX_PATTERN")
    )
    password_validation_hint: Text = Field("", validation_alias=_env("PASSWORD_VALIDATION_HINT"))
    password_min_length: int = Field(8, ge=1, le=256, validation_alias=_env("PASSWORD_MIN_LENGTH"))
    password_hash_concurrency: int = Field(4, ge=1, le=64, validation_alias=_env("PASSWORD_HASH_CONCURRENCY"))

    # --- storage --------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    database_url: Text | None = Field(None, validation_alias=_env("DATABASE_URL"))
    session_sync_interval: float = Field(2.0, gt=0, le=60, validation_alias=_env("SESSION_SYNC_INTERVAL"))

    database_pool_size: int = Field(10, ge=1, le=1000, validation_alias=_env("DATABASE_POOL_SIZE"))
    database_pool_max_overflow: int = Field(
        10, ge=0, le=1000, validation_alias=_env("DATABASE_POOL_MAX_OVERFLOW")
    )
    database_pool_timeout: float = Field(30, gt=0, le=600, validation_alias=_env("DATABASE_POOL_TIMEOUT"))
    database_pool_recycle: int = Field(1800, ge=-1, le=86400, validation_alias=_env("DATABASE_POOL_RECYCLE"))
    redis_url: Text | None = Field(None, validation_alias=_env("REDIS_URL"))
    redis_key_prefix: Text = Field("wardgate", validation_alias=_env("REDIS_KEY_PREFIX"))

    # --- rate limits ----------------------------------------------------------------------------
    signin_rate_limit: Rate = Field("5/3m", validation_alias=_env("SIGNIN_RATE_LIMIT"))
    signin_ip_rate_limit: Rate = Field("20/3m", validation_alias=_env("SIGNIN_IP_RATE_LIMIT"))
    signup_rate_limit: Rate = Field("10/1h", validation_alias=_env("SIGNUP_RATE_LIMIT"))
    password_change_rate_limit: Rate = Field("5/15m", validation_alias=_env("PASSWORD_CHANGE_RATE_LIMIT"))
    auth_failure_rate_limit: Rate = Field("30/1m", validation_alias=_env("AUTH_FAILURE_RATE_LIMIT"))

    # --- cookies --------------------------------------------------------------------------------
    webui_session_cookie_same_site: Annotated[SameSite, BeforeValidator(_lower)] = Field(
        "lax", validation_alias=_env("WEBUI_SESSION_COOKIE_SAME_SITE")
    )
    webui_session_cookie_secure: OptionalBool = Field(
        None, validation_alias=_env("WEBUI_SESSION_COOKIE_SECURE")
    )
    webui_auth_cookie_same_site: Annotated[SameSite | None, BeforeValidator(_lower)] = Field(
        None, validation_alias=_env("WEBUI_AUTH_COOKIE_SAME_SITE")
    )
    webui_auth_cookie_secure: OptionalBool = Field(None, validation_alias=_env("WEBUI_AUTH_COOKIE_SECURE"))

    # --- the site -------------------------------------------------------------------------------
    webui_url: Text | None = Field(None, validation_alias=_env("WEBUI_URL"))
    webui_name: Text = Field("wardgate", validation_alias=_env("WEBUI_NAME"))
    host: Text = Field("127.0.0.1", validation_alias=_env("HOST"))
    port: int = Field(8080, ge=1, le=65535, validation_alias=_env("PORT"))
    # --- HTTP hardening -------------------------------------------------------------------------
    cors_allow_origin: Annotated[str, BeforeValidator(lambda v: str(v).strip())] = Field(
        "", validation_alias=_env("CORS_ALLOW_ORIGIN")
    )
    forwarded_allow_ips: Text = Field("127.0.0.1", validation_alias=_env("FORWARDED_ALLOW_IPS"))
    max_header_size: int = Field(32 * 1024, ge=4096, le=1024**2, validation_alias=_env("MAX_HEADER_SIZE"))
    max_body_size: int = Field(4 * 1024 * 1024, ge=1024, le=1024**3, validation_alias=_env("MAX_BODY_SIZE"))
    ssl_certfile: Path | None = Field(None, validation_alias=_env("SSL_CERTFILE"))
    ssl_keyfile: Path | None = Field(None, validation_alias=_env("SSL_KEYFILE"))
    secret_key_source: Literal["environment", "file"] = "environment"  # noqa: S105
    security_headers: dict[str, str | None] = Field(default_factory=dict)
    """The security-header variables as given (None: unset, "": switched off); see security_headers.py."""

    # --- single sign-on (OAuth 2.0 / OpenID Connect; docs/sso.md) ------------------------------
    # A provider is on when its client id and secret are set; `sign_on_problems`
    # (oauth/configuration.py) refuses half a provider. GOOGLE_OPENID_PROVIDER_URL and
    # GITHUB_BASE_URL / GITHUB_API_BASE_URL are wardgate's own additions (tests, GitHub Enterprise).
    google_client_id: Text | None = Field(None, validation_alias=_env("GOOGLE_CLIENT_ID"))
    google_client_secret: SecretStr | None = Field(None, validation_alias=_env("GOOGLE_CLIENT_SECRET"))
    google_oauth_scope: Text = Field("openid email profile", validation_alias=_env("GOOGLE_OAUTH_SCOPE"))
    google_redirect_uri: Text | None = Field(None, validation_alias=_env("GOOGLE_REDIRECT_URI"))
    google_openid_provider_url: Text = Field(
        "https://accounts.google.com/.well-known/openid-configuration",
        validation_alias=_env("GOOGLE_OPENID_PROVIDER_URL"),
    )
    microsoft_client_id: Text | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_ID"))
    microsoft_client_secret: SecretStr | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_SECRET"))
    microsoft_client_tenant_id: Text | None = Field(None, validation_alias=_env("MICROSOFT_CLIENT_TENANT_ID"))
    microsoft_client_login_base_url: Text = Field(
        "https://login.microsoftonline.com", validation_alias=_env("MICROSOFT_CLIENT_LOGIN_BASE_URL")
    )
    microsoft_oauth_scope: Text = Field(
        "openid email profile", validation_alias=_env("MICROSOFT_OAUTH_SCOPE")
    )
    microsoft_redirect_uri: Text | None = Field(None, validation_alias=_env("MICROSOFT_REDIRECT_URI"))
    github_client_id: Text | None = Field(None, validation_alias=_env("GITHUB_CLIENT_ID"))
    github_client_secret: SecretStr | None = Field(None, validation_alias=_env("GITHUB_CLIENT_SECRET"))
    github_client_scope: Text = Field("user:email", validation_alias=_env("GITHUB_CLIENT_SCOPE"))
    github_client_redirect_uri: Text | None = Field(None, validation_alias=_env("GITHUB_CLIENT_REDIRECT_URI"))
    github_base_url: Text = Field("https://github.com", validation_alias=_env("GITHUB_BASE_URL"))
    github_api_base_url: Text = Field("https://api.github.com", validation_alias=_env("GITHUB_API_BASE_URL"))
    oauth_client_id: Text | None = Field(None, validation_alias=_env("OAUTH_CLIENT_ID"))
    oauth_client_secret: SecretStr | None = Field(None, validation_alias=_env("OAUTH_CLIENT_SECRET"))
    openid_provider_url: Text | None = Field(None, validation_alias=_env("OPENID_PROVIDER_URL"))
    oauth_provider_name: Text = Field("SSO", validation_alias=_env("OAUTH_PROVIDER_NAME"))
    oauth_scopes: Text = Field("openid email profile", validation_alias=_env("OAUTH_SCOPES"))
    openid_redirect_uri: Text | None = Field(None, validation_alias=_env("OPENID_REDIRECT_URI"))
    oauth_code_challenge_method: Text | None = Field(
        None, validation_alias=_env("OAUTH_CODE_CHALLENGE_METHOD")
    )
    oauth_token_endpoint_auth_method: Annotated[
        Literal["client_secret_basic", "client_secret_post", "none"] | None, BeforeValidator(_lower)
    ] = Field(None, validation_alias=_env("OAUTH_TOKEN_ENDPOINT_AUTH_METHOD"))
    enable_oauth_signup: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_SIGNUP"))
    oauth_merge_accounts_by_email: Bool = Field(False, validation_alias=_env("OAUTH_MERGE_ACCOUNTS_BY_EMAIL"))
    oauth_allowed_domains: Text = Field("*", validation_alias=_env("OAUTH_ALLOWED_DOMAINS"))
    enable_oauth_role_management: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_ROLE_MANAGEMENT"))
    oauth_roles_claim: Text = Field("roles", validation_alias=_env("OAUTH_ROLES_CLAIM"))
    oauth_roles_separator: Annotated[str, BeforeValidator(lambda v: str(v) or ",")] = Field(
        ",", validation_alias=_env("OAUTH_ROLES_SEPARATOR")
    )
    oauth_allowed_roles: Text = Field("user,admin", validation_alias=_env("OAUTH_ALLOWED_ROLES"))
    oauth_admin_roles: Text = Field("admin", validation_alias=_env("OAUTH_ADMIN_ROLES"))
    enable_oauth_group_management: Bool = Field(False, validation_alias=_env("ENABLE_OAUTH_GROUP_MANAGEMENT"))
    oauth_groups_claim: Text = Field(
        "groups", validation_alias=_env("OAUTH_GROUPS_CLAIM", "OAUTH_GROUP_CLAIM")
    )
    oauth_groups_separator: Annotated[str, BeforeValidator(lambda v: str(v) or ";")] = Field(
        ";", validation_alias=_env("OAUTH_GROUPS_SEPARATOR")
    )
    oauth_blocked_groups: Text = Field("", validation_alias=_env("OAUTH_BLOCKED_GROUPS"))
    oauth_email_claim: Text = Field("email", validation_alias=_env("OAUTH_EMAIL_CLAIM"))
    oauth_username_claim: Text = Field("name", validation_alias=_env("OAUTH_USERNAME_CLAIM"))
    oauth_sub_claim: Text | None = Field(None, validation_alias=_env("OAUTH_SUB_CLAIM"))
    oauth_session_token_encryption_key: SecretStr | None = Field(
        None, validation_alias=_env("OAUTH_SESSION_TOKEN_ENCRYPTION_KEY")
    )
    openid_end_session_endpoint: Text | None = Field(
        None, validation_alias=_env("OPENID_END_SESSION_ENDPOINT")
    )
    webui_auth_signout_redirect_url: Text | None = Field(
        None, validation_alias=_env("WEBUI_AUTH_SIGNOUT_REDIRECT_URL")
    )
    # --- end of single sign-on ------------------------------------------------------------------

    # --- upstreams (reverse proxy) --------------------------------------------------------------
    ollama_base_url: Text | None = Field(None, validation_alias=_env("OLLAMA_BASE_URL"))
    openai_api_base_url: Text | None = Field(None, validation_alias=_env("OPENAI_API_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    upstream_url: Text | None = Field(None, validation_alias=_env("UPSTREAM_URL"))
    ollama_allowed_roles: Text = Field("user,admin", validation_alias=_env("OLLAMA_ALLOWED_ROLES"))
    openai_allowed_roles: Text = Field("user,admin", validation_alias=_env("OPENAI_ALLOWED_ROLES"))
    upstream_allowed_roles: Text = Field("user,admin", validation_alias=_env("UPSTREAM_ALLOWED_ROLES"))
    ollama_allowed_groups: Text = Field("", validation_alias=_env("OLLAMA_ALLOWED_GROUPS"))
    openai_allowed_groups: Text = Field("", validation_alias=_env("OPENAI_ALLOWED_GROUPS"))
    upstream_allowed_groups: Text = Field("", validation_alias=_env("UPSTREAM_ALLOWED_GROUPS"))
    upstream_timeout: float = Field(300, gt=0, le=86400, validation_alias=_env("UPSTREAM_TIMEOUT"))
    proxy_enforce_security_headers: Bool = Field(
        False, validation_alias=_env("PROXY_ENFORCE_SECURITY_HEADERS")
    )
    webui_auth_trusted_email_header: Text = Field(
        "X-Forwarded-Email", validation_alias=_env("WEBUI_AUTH_TRUSTED_EMAIL_HEADER")
    )
    webui_auth_trusted_name_header: Text = Field(
        "X-Forwarded-Name", validation_alias=_env("WEBUI_AUTH_TRUSTED_NAME_HEADER")
    )
    webui_auth_trusted_groups_header: Text = Field(
        "X-Forwarded-Groups", validation_alias=_env("WEBUI_AUTH_TRUSTED_GROUPS_HEADER")
    )
    webui_auth_trusted_role_header: Text = Field(
        "X-Forwarded-Role", validation_alias=_env("WEBUI_AUTH_TRUSTED_ROLE_HEADER")
    )
    wardgate_path_prefix: Text = Field("", validation_alias=_env("WARDGATE_PATH_PREFIX"))

    # --- API keys (docs/api-keys.md) -------------------------------------------------------------
    enable_api_keys: Bool = Field(False, validation_alias=_env("ENABLE_API_KEYS"))
    user_permissions_features_api_keys: Bool = Field(
        False, validation_alias=_env("USER_PERMISSIONS_FEATURES_API_KEYS")
    )
    custom_api_key_header: Annotated[str, BeforeValidator(_lower)] = Field(
        "x-api-key", validation_alias=_env("CUSTOM_API_KEY_HEADER")
    )
    enable_api_keys_endpoint_restrictions: Bool = Field(
        False,
        validation_alias=_env(
            "ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS", "ENABLE_API_KEY_ENDPOINT_RESTRICTIONS"
        ),
    )
    api_keys_allowed_endpoints: Text = Field(
        "", validation_alias=_env("API_KEYS_ALLOWED_ENDPOINTS", "API_KEY_ALLOWED_ENDPOINTS")
    )
    api_key_rate_limit: Rate = Field("600/1m", validation_alias=_env("API_KEY_RATE_LIMIT"))

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

    @field_validator("api_keys_allowed_endpoints")
    @classmethod
    def _endpoints(cls, value: str) -> str:
        return ",".join(check_path_prefixes([p for p in value.split(",") if p.strip()]))

    @property
    def api_key_endpoints(self) -> tuple[str, ...] | None:
        """Path prefixes every API key is limited to (None: no global limit; empty: nothing)."""
        listed = tuple(p for p in self.api_keys_allowed_endpoints.split(",") if p)
        if self.enable_api_keys_endpoint_restrictions or listed:
            return listed
        return None

    # --- end of API keys -------------------------------------------------------------------------

    global_log_level: Annotated[
        Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"], BeforeValidator(lambda v: str(v).upper())
    ] = Field("INFO", validation_alias=_env("GLOBAL_LOG_LEVEL"))

    @field_validator("password_validation_regex_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from None
        return value

    @field_validator("webui_url")
    @classmethod
    def _is_origin_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"(https?)://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\])(:\d{1,5})?(/[^\s?#]*)?", value)
        if not match:
            raise ValueError("expected an absolute http(s) URL such as https://chat.example.com")
        return value.rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected redis://[:password@]host:6379/0 or rediss:// (TLS)")
        return value

    @field_validator("wardgate_path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("expected a path such as /wardgate (no trailing slash), or empty")
        return value

    @field_validator(
        "webui_auth_trusted_email_header",
        "webui_auth_trusted_name_header",
        "webui_auth_trusted_groups_header",
        "webui_auth_trusted_role_header",
    )
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", value):
            raise ValueError("expected an HTTP header name such as X-Forwarded-Email")
        return value

    @field_validator("ollama_base_url", "openai_api_base_url", "upstream_url")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        problem = None if value is None else check_upstream_url(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("webui_admin_email")
    @classmethod
    def _admin_email(cls, value: str | None) -> str | None:
        return None if value is None else value.lower()

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
    def effective_database_url(self) -> str:
        """`DATABASE_URL`, or an SQLite file in `DATA_DIR`."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'wardgate.db').resolve()}"

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
        return re.compile(self.password_validation_regex_pattern) if self.enable_password_validation else None


SECRET_FIELDS = frozenset(
    {
        "webui_secret_key",
        "webui_admin_password",
        "openai_api_key",
        # single sign-on
        "google_client_secret",
        "microsoft_client_secret",
        "github_client_secret",
        "oauth_client_secret",
        "oauth_session_token_encryption_key",
    }
)
URL_FIELDS = frozenset({"redis_url", "database_url"})  # may carry a password: shown masked


def mask_url(url: str) -> str:
    """Hide the password part of a URL's user information."""
    # Up to the last "@" before the path: a password may itself contain "@".
    return re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url)


def _field_env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if alias else field.upper()


def variable_names() -> dict[str, str]:
    """Every environment variable wardgate reads, mapped to its settings field."""
    names: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if alias is None:
            continue  # derived at load time (the secret's source, the header table), not a variable
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names.update({str(c): field for c in choices})
    return names


def _describe(error: Mapping[str, Any]) -> str:
    name = str(error["loc"][0]) if error["loc"] else "configuration"
    field = variable_names().get(name, name)
    text = str(error.get("input", ""))
    value = (
        "(redacted)"
        if field in SECRET_FIELDS
        else repr((mask_url(text) if field in URL_FIELDS else text)[:80])
    )
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}={value}: {message}"


def _cross_field_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    if not settings.webui_auth:
        problems.append(
            "WEBUI_AUTH=false: wardgate always authenticates; remove the variable or set it to true"
        )
    if bool(settings.webui_admin_email) != bool(settings.webui_admin_password):
        problems.append(
            "WEBUI_ADMIN_EMAIL / WEBUI_ADMIN_PASSWORD: set both to create the first admin at start, "
            "or neither"
        )
    same_site_none = (
        settings.auth_cookie_same_site == "none" or settings.webui_session_cookie_same_site == "none"
    )
    if same_site_none and settings.auth_cookie_secure is not True:
        problems.append(
            "WEBUI_SESSION_COOKIE_SAME_SITE/WEBUI_AUTH_COOKIE_SAME_SITE=none requires "
            "WEBUI_SESSION_COOKIE_SECURE=true (browsers refuse SameSite=None cookies without Secure)"
        )
    problems.extend(header_problems(settings.security_headers))
    problems.extend(sign_on_problems(settings))
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        problems.append("SSL_CERTFILE / SSL_KEYFILE: set both to serve HTTPS directly, or neither")
    for name, path in (("SSL_CERTFILE", settings.ssl_certfile), ("SSL_KEYFILE", settings.ssl_keyfile)):
        if path is not None and not path.is_file():
            problems.append(f"{name}={str(path)!r}: file not found")
    if settings.webui_secret_key is not None and not settings.webui_secret_key.get_secret_value().strip():
        problems.append("WEBUI_SECRET_KEY=(redacted): must not be blank; unset it to have one generated")
    return problems


def _resolve_secret_key(settings: Settings, *, persist: bool) -> Settings:
    """Use the configured key, else a generated one persisted in DATA_DIR (mode 0600).

    With persist=False (`wardgate check`) a missing key file is not created: a throwaway key is used.
    """
    if settings.webui_secret_key is not None:
        return settings
    key_file = settings.data_dir / SECRET_KEY_FILENAME
    if key_file.exists():
        key = key_file.read_text(encoding="utf-8").strip()
    elif not persist:
        key = secrets.token_urlsafe(48)
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)  # 48 random bytes, above the 32-byte floor
        # O_EXCL: two processes starting at once must not each write a different key; the mode is
        # set at creation, so the key is never readable by others, not even for an instant.
        try:
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = key_file.read_text(encoding="utf-8").strip()
        else:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(key)
    return settings.model_copy(update={"webui_secret_key": SecretStr(key), "secret_key_source": "file"})


def read_environment(env_file: str | None = ".env") -> dict[str, str]:
    """The process environment over the values of a `.env` file (the environment wins)."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


def load_settings(
    env: Mapping[str, str] | None = None, *, env_file: str | None = ".env", persist_secret: bool = True
) -> Settings:
    """Read, validate and complete the configuration; raise ConfigError listing every problem."""
    if env is None:
        env = read_environment(env_file)
    values: dict[str, Any] = {k: v for k, v in env.items() if k != "security_headers"}
    values["security_headers"] = {name: env[name] for name in HEADER_ENV_NAMES if name in env}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None
    problems = _cross_field_problems(settings)
    if problems:
        raise ConfigError(problems)
    return _resolve_secret_key(settings, persist=persist_secret)


def redacted_settings(settings: Settings) -> dict[str, str]:
    """The effective settings by variable name, secrets replaced, for `wardgate check` and /admin."""
    shown: dict[str, str] = {}
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if field in SECRET_FIELDS:
            text = "(set, redacted)" if value is not None else "(not set)"
        elif field in ("security_headers", "secret_key_source"):
            continue
        elif isinstance(value, timedelta):
            text = f"{int(value.total_seconds())}s"
        elif value is None:
            text = "(not set)"
        elif field in URL_FIELDS:
            text = mask_url(str(value))
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        shown[_field_env_name(field)] = text
    return shown
