"""Every variable, given a value it must refuse: `wardgate check` exits 1 naming it, and `serve` stops
with the same message and no traceback. The table must cover every variable wardgate reads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SECRET, Outcome
from wardgate.config import variable_names
from wardgate.config.headers import HEADER_ENV_NAMES
from wardgate.config.loading import env_name

# One refused value per variable (primary names; the deprecated aliases are tested below).
INVALID = {
    "WEBUI_SECRET_KEY": "   ",
    "JWT_EXPIRES_IN": "1y",
    "WEBUI_SECRET_KEY_FALLBACKS": "old-key,,older-key",
    "UVICORN_WORKERS": "0",
    "FORWARD_USER_INFO_HEADER_JWT_SECRET": "too-short",
    "FORWARD_USER_INFO_HEADER_JWT": "X User Jwt",
    "FORWARD_USER_INFO_HEADER_USER_EMAIL": "X User Email",
    "FORWARD_USER_INFO_HEADER_USER_ID": "X:Id",
    "FORWARD_USER_INFO_HEADER_USER_NAME": "X Name",
    "FORWARD_USER_INFO_HEADER_USER_ROLE": "X Role",
    "FORWARD_SESSION_INFO_HEADER_CHAT_ID": "X Chat",
    "SMTP_HOST": "mail server",
    "SMTP_PORT": "0",
    "SMTP_SECURITY": "ssl",
    "SMTP_USERNAME": "a\x07b",
    "SMTP_PASSWORD": "   ",
    "SMTP_FROM": "not-an-address",
    "SMTP_CA_CERT_FILE": "/nonexistent/ca.pem",
    "SMTP_TIMEOUT": "0",
    "PASSWORD_RESET_EXPIRES_IN": "1y",
    "PASSWORD_RESET_RATE_LIMIT": "often",
    "METRICS_TOKEN": "two\nlines",
    "METRICS_ALLOW_IPS": "10.0.0.1/8",
    "ENABLE_OTEL": "enabled",
    "ENABLE_OTEL_TRACES": "y",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
    "OTEL_EXPORTER_OTLP_INSECURE": "insecure",
    "OTEL_OTLP_SPAN_EXPORTER": "zipkin",
    "OTEL_SERVICE_NAME": "bad\x07name",
    "OTEL_TRACES_SAMPLER": "sometimes",
    "OTEL_TRACES_SAMPLER_ARG": "2",
    "OTEL_BASIC_AUTH_USERNAME": "a\x07b",
    "OTEL_BASIC_AUTH_PASSWORD": "   ",
    "WEBUI_AUTH": "false",
    "ENABLE_SIGNUP": "maybe",
    "DEFAULT_USER_ROLE": "root",
    "ENABLE_PASSWORD_AUTH": "yes",
    "ENABLE_LOGIN_FORM": "no",
    "WEBUI_ADMIN_EMAIL": "not-an-email",
    "WEBUI_ADMIN_PASSWORD": "   ",
    "WEBUI_ADMIN_NAME": "Ada\nAdmin",
    "ENABLE_PASSWORD_VALIDATION": "on",
    "PASSWORD_VALIDATION_REGEX_PATTERN": "(unclosed",
    "PASSWORD_VALIDATION_HINT": "use\x07a bell",
    "PASSWORD_MIN_LENGTH": "0",
    "PASSWORD_HASH_CONCURRENCY": "1000",
    "DATA_DIR": "",
    "DATABASE_URL": "mysql://db/wardgate",
    "SESSION_SYNC_INTERVAL": "0",
    "MAX_SESSIONS_PER_USER": "0",
    "AUDIT_RETENTION_DAYS": "forever",
    "DATABASE_POOL_SIZE": "0",
    "DATABASE_POOL_MAX_OVERFLOW": "-1",
    "DATABASE_POOL_TIMEOUT": "forever",
    "DATABASE_POOL_RECYCLE": "-2",
    "REDIS_URL": "http://cache:6379",
    "REDIS_KEY_PREFIX": "with space",
    "SIGNIN_RATE_LIMIT": "5/fortnight",
    "SIGNIN_IP_RATE_LIMIT": "0/1m",
    "SIGNUP_RATE_LIMIT": "many",
    "PASSWORD_CHANGE_RATE_LIMIT": "5/0m",
    "AUTH_FAILURE_RATE_LIMIT": "-1/1m",
    "MFA_REQUIRED_ROLES": "root",
    "ENABLE_LDAP": "maybe",
    "LDAP_SERVER_LABEL": "x" * 300,
    "LDAP_SERVER_HOST": "ldaps://dir.example.com",
    "LDAP_SERVER_PORT": "70000",
    "LDAP_ATTRIBUTE_FOR_MAIL": "mail)(x",
    "LDAP_ATTRIBUTE_FOR_USERNAME": "1uid",
    "LDAP_APP_DN": "cn=app\ndc=x",
    "LDAP_APP_PASSWORD": "   ",
    "LDAP_SEARCH_BASE": "x" * 2000,
    "LDAP_SEARCH_FILTERS": "objectClass=person",
    "LDAP_USE_TLS": "sometimes",
    "LDAP_CA_CERT_FILE": "/nonexistent/ca.pem",
    "LDAP_VALIDATE_CERT": "perhaps",
    "LDAP_CIPHERS": "NOT-A-CIPHER-LIST",
    "ENABLE_LDAP_GROUP_MANAGEMENT": "y",
    "LDAP_ATTRIBUTE_FOR_GROUPS": "member of",
    "FORWARD_AUTH_FILE": "/nonexistent/forward-auth.toml",
    "UPSTREAM_SIGNOUT_PATH": "/api/../signout",
    "SESSION_COOKIE_DOMAIN": "https://example.com/",
    "MFA_STEP_UP_MAX_AGE": "-1",
    "MFA_RATE_LIMIT": "ten/5m",
    "MFA_ENCRYPTION_KEY": "not-a-fernet-key",
    "OAUTH_MFA_ACR_VALUES": "x" * 5000,
    "WEBUI_SESSION_COOKIE_SAME_SITE": "sometimes",
    "WEBUI_SESSION_COOKIE_SECURE": "1",
    "WEBUI_AUTH_COOKIE_SAME_SITE": "loose",
    "WEBUI_AUTH_COOKIE_SECURE": "secure",
    "WEBUI_URL": "javascript:alert(1)",
    "WEBUI_NAME": "x" * 300,
    "HOST": "not a host!",
    "PORT": "70000",
    "CORS_ALLOW_ORIGIN": "bad;*",
    "FORWARDED_ALLOW_IPS": "localhost",
    "MAX_HEADER_SIZE": "100",
    "MAX_BODY_SIZE": "1",
    "CLIENT_HEADER_TIMEOUT": "0",
    "CLIENT_BODY_TIMEOUT": "never",
    "SEND_TIMEOUT": "-1",
    "KEEP_ALIVE_TIMEOUT": "forever",
    "MAX_CONNECTIONS_PER_IP": "0",
    "GRACEFUL_SHUTDOWN_TIMEOUT": "-5",
    "RATE_LIMIT_IPV6_PREFIX": "129",
    "SSL_CERTFILE": "/nonexistent/cert.pem",
    "SSL_KEYFILE": "/nonexistent/key.pem",
    "GOOGLE_CLIENT_ID": "id\nwith a line break",
    "GOOGLE_CLIENT_SECRET": "sec\x01ret",
    "GOOGLE_OAUTH_SCOPE": "email profile",
    "GOOGLE_REDIRECT_URI": "/oauth/google/callback",
    "GOOGLE_OPENID_PROVIDER_URL": "http://accounts.example.com/.well-known/openid-configuration",
    "MICROSOFT_CLIENT_ID": "i\x7fd",
    "MICROSOFT_CLIENT_SECRET": "sec\x02ret",
    "MICROSOFT_CLIENT_TENANT_ID": "ten\nant",
    "MICROSOFT_CLIENT_LOGIN_BASE_URL": "ftp://login.example.com",
    "MICROSOFT_OAUTH_SCOPE": "profile",
    "MICROSOFT_REDIRECT_URI": "callback",
    "GITHUB_CLIENT_ID": "i\rd",
    "GITHUB_CLIENT_SECRET": "sec\x03ret",
    "GITHUB_CLIENT_SCOPE": "user:email\x00repo",
    "GITHUB_CLIENT_REDIRECT_URI": "https://",
    "GITHUB_BASE_URL": "http://github.example.com",
    "GITHUB_API_BASE_URL": "ftp://x",
    "OAUTH_CLIENT_ID": "i\x1bd",
    "OAUTH_CLIENT_SECRET": "sec\x04ret",
    "OPENID_PROVIDER_URL": "http://idp.example/.well-known/openid-configuration",
    "OAUTH_PROVIDER_NAME": "n" * 300,
    "OAUTH_SCOPES": "email",
    "OPENID_REDIRECT_URI": "/oauth/oidc/callback",
    "OAUTH_CODE_CHALLENGE_METHOD": "plain",
    "OAUTH_TOKEN_ENDPOINT_AUTH_METHOD": "private_key_jwt",
    "ENABLE_OAUTH_SIGNUP": "yes",
    "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": "sometimes",
    "OAUTH_ALLOWED_DOMAINS": "example.com/path",
    "ENABLE_OAUTH_ROLE_MANAGEMENT": "enabled",
    "OAUTH_ROLES_CLAIM": "my roles",
    "OAUTH_ROLES_SEPARATOR": "-" * 9,
    "OAUTH_ALLOWED_ROLES": "user\nadmin",
    "OAUTH_ADMIN_ROLES": "ad\x00min",
    "ENABLE_OAUTH_GROUP_MANAGEMENT": "enabled",
    "OAUTH_GROUPS_CLAIM": "my groups",
    "OAUTH_GROUPS_SEPARATOR": "\n",
    "OAUTH_BLOCKED_GROUPS": "[1, 2",
    "OAUTH_EMAIL_CLAIM": "e mail",
    "OAUTH_USERNAME_CLAIM": "user name",
    "OAUTH_SUB_CLAIM": "s ub",
    "OAUTH_SESSION_TOKEN_ENCRYPTION_KEY": "not-a-key",
    "OPENID_END_SESSION_ENDPOINT": "http://idp.example/logout",
    "WEBUI_AUTH_SIGNOUT_REDIRECT_URL": "/signed-out",
    "OLLAMA_BASE_URL": "127.0.0.1:11434",
    "OPENAI_API_BASE_URL": "https://user:pw@api.example.com/v1",
    "OPENAI_API_KEY": "sk-\x00key",
    "UPSTREAM_URL": "http://127.0.0.1:3000/?x=1",
    "OLLAMA_ALLOWED_ROLES": "wizard",
    "OPENAI_ALLOWED_ROLES": "user,root",
    "UPSTREAM_ALLOWED_ROLES": "everyone",
    "OLLAMA_ALLOWED_GROUPS": "ml\nops",
    "OPENAI_ALLOWED_GROUPS": "g" * 5000,
    "UPSTREAM_ALLOWED_GROUPS": "a\x00b",
    "UPSTREAM_TIMEOUT": "0",
    "MODEL_ACCESS_FILE": "/nonexistent/models.toml",
    "MODEL_REQUEST_MAX_BYTES": "12",
    "USAGE_RETENTION_DAYS": "0",
    "PROXY_ENFORCE_SECURITY_HEADERS": "always",
    "FORWARD_UNDERSCORE_HEADERS": "sometimes",
    "WEBUI_AUTH_TRUSTED_EMAIL_HEADER": "X Email",
    "WEBUI_AUTH_TRUSTED_NAME_HEADER": "X-Name:",
    "WEBUI_AUTH_TRUSTED_GROUPS_HEADER": "X_Groups",
    "WEBUI_AUTH_TRUSTED_ROLE_HEADER": "x" * 65,
    "WARDGATE_PATH_PREFIX": "wardgate/",
    "ENABLE_API_KEYS": "yes",
    "USER_PERMISSIONS_FEATURES_API_KEYS": "yes",
    "CUSTOM_API_KEY_HEADER": "content-type",
    "ENABLE_API_KEYS_ENDPOINT_RESTRICTIONS": "restricted",
    "API_KEYS_ALLOWED_ENDPOINTS": "/ollama,ollama",
    "API_KEY_RATE_LIMIT": "600 per fortnight",
    "GLOBAL_LOG_LEVEL": "LOUD",
    # security headers
    "HSTS": "forever",
    "XFRAME_OPTIONS": "ALLOWALL",
    "XCONTENT_TYPE": "sniff",
    "XDOWNLOAD_OPTIONS": "open",
    "XPERMITTED_CROSS_DOMAIN_POLICIES": "all",
    "REFERRER_POLICY": "everywhere",
    "PERMISSIONS_POLICY": "camera=*",
    "CACHE_CONTROL": "forever",
    "CONTENT_SECURITY_POLICY": "default-src 'self', script-src *",
    "CONTENT_SECURITY_POLICY_REPORT_ONLY": "default-src\r\n'self'",
    "CROSS_ORIGIN_OPENER_POLICY": "open",
    "CROSS_ORIGIN_RESOURCE_POLICY": "anyone",
    "CROSS_ORIGIN_EMBEDDER_POLICY": "require",
    "REPORTING_ENDPOINTS": "csp=http://x",
}
DEPRECATED = {
    "WEBUI_JWT_SECRET_KEY": "   ",
    "OAUTH_GROUP_CLAIM": "my groups",
    "API_KEY_ALLOWED_ENDPOINTS": "ollama",
    "ENABLE_API_KEY_ENDPOINT_RESTRICTIONS": "restricted",
    "LDAP_SEARCH_FILTER": "uid=*",  # Open WebUI's other spelling
}
SECRETS = {
    "WEBUI_SECRET_KEY",
    "WEBUI_ADMIN_PASSWORD",
    "GOOGLE_CLIENT_SECRET",
    "MICROSOFT_CLIENT_SECRET",
    "GITHUB_CLIENT_SECRET",
    "OAUTH_CLIENT_SECRET",
    "OAUTH_SESSION_TOKEN_ENCRYPTION_KEY",
    "OPENAI_API_KEY",
    "MFA_ENCRYPTION_KEY",
    "LDAP_APP_PASSWORD",
    "WEBUI_SECRET_KEY_FALLBACKS",
    "METRICS_TOKEN",
    "OTEL_BASIC_AUTH_PASSWORD",
    "SMTP_PASSWORD",
    "FORWARD_USER_INFO_HEADER_JWT_SECRET",
}


def test_the_table_covers_every_variable() -> None:
    primary = {env_name(field) for field in variable_names().values()}
    assert set(INVALID) == primary | set(HEADER_ENV_NAMES)
    assert set(DEPRECATED) == set(variable_names()) - primary


@pytest.mark.parametrize(
    ("name", "value"), [*INVALID.items(), *DEPRECATED.items()], ids=lambda v: str(v)[:40]
)
def test_check_refuses_the_value_naming_the_variable(
    name: str, value: str, tmp_path: Path, command: Callable[..., Outcome]
) -> None:
    result = command({"DATA_DIR": str(tmp_path), name: value}, "check")
    assert result.code == 1, result.err
    problems = [line for line in result.err.splitlines() if line.startswith("  - ")]
    named = (f"{name}=", f"{name} ", f"{name}:", f"/ {name}")
    assert problems and any(any(form in p for form in named) for p in problems), result.err
    if name in SECRETS:
        assert "(redacted)" in result.err or "(set" not in result.err
    if name in SECRETS and value.strip():
        assert value not in result.err
    assert "Traceback" not in result.err


def _wardgate(tmp_path: Path, command: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.defpath, "DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, **env}
    return subprocess.run(
        [sys.executable, "-m", "wardgate", command],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_serve_stops_with_the_message_check_gives(tmp_path: Path) -> None:
    """Values once parsed only when the app was built: `check` said OK and `serve` died in a traceback."""
    bad = {
        "CORS_ALLOW_ORIGIN": "bad;*",
        "OLLAMA_ALLOWED_ROLES": "wizard",
        "FORWARDED_ALLOW_IPS": "10.0.0.1/8",
    }
    check = _wardgate(tmp_path, "check", **bad)
    serve = _wardgate(tmp_path, "serve", **bad)
    assert (check.returncode, serve.returncode) == (1, 2)
    for result in (check, serve):
        assert "Traceback" not in result.stderr
        for name in bad:
            assert f"  - {name}=" in result.stderr
    problems = [line for line in check.stderr.splitlines() if line.startswith("  - ")]
    assert problems == [line for line in serve.stderr.splitlines() if line.startswith("  - ")]
    assert not (tmp_path / "wardgate.db").exists()  # refused before touching anything
