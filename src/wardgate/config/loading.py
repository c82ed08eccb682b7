"""Loading the configuration: the environment (and `.env`) read once, every problem reported at once.

`load_settings()` takes what the command line read of the environment (`read_environment`; no
other module reads it) and validates every variable (`Settings`), the security-header variables
(`headers`), then the rules that span several variables, and raises
one `ConfigError` listing every problem: the variable, its value (secrets redacted, URL passwords
masked) and the accepted form. `wardgate check` and `wardgate serve` call the same function, so
`check` reports everything `serve` would stop on.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import AliasChoices, SecretStr, ValidationError

from wardgate.config.headers import HEADER_ENV_NAMES, checked_headers
from wardgate.config.network import mask_url
from wardgate.config.settings import LIST_SEPARATORS, SECRET_FIELDS, SECRET_KEY_FILENAME, URL_FIELDS, Settings
from wardgate.config.sign_on import sign_on_problems
from wardgate.errors import ConfigError


def env_name(field: str) -> str:
    """The variable a Settings field is read from (its first alias)."""
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


def _shown(field: str, text: str) -> str:
    """A value as it may appear in a message: secrets redacted, URL passwords masked, cut short."""
    if field in SECRET_FIELDS:
        return "(redacted)"
    return repr((mask_url(text) if field in URL_FIELDS else text)[:80])


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    name = str(error["loc"][0]) if error["loc"] else "configuration"
    field = variable_names().get(name, name)
    message = str(error["msg"]).removeprefix("Value error, ")
    return name, f"{name}={_shown(field, str(error.get('input', '')))}: {message}"


def cross_field_problems(settings: Settings) -> list[str]:
    """The rules that span several variables."""
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
    same_site_none = "none" in (settings.auth_cookie_same_site, settings.webui_session_cookie_same_site)
    if same_site_none and settings.auth_cookie_secure is not True:
        problems.append(
            "WEBUI_SESSION_COOKIE_SAME_SITE/WEBUI_AUTH_COOKIE_SAME_SITE=none requires "
            "WEBUI_SESSION_COOKIE_SECURE=true (browsers refuse SameSite=None cookies without Secure)"
        )
    problems.extend(sign_on_problems(settings))
    if bool(settings.ssl_certfile) != bool(settings.ssl_keyfile):
        problems.append("SSL_CERTFILE / SSL_KEYFILE: set both to serve HTTPS directly, or neither")
    files = (
        ("SSL_CERTFILE", settings.ssl_certfile),
        ("SSL_KEYFILE", settings.ssl_keyfile),
        ("LDAP_CA_CERT_FILE", settings.ldap_ca_cert_file),
        ("SMTP_CA_CERT_FILE", settings.smtp_ca_cert_file),
    )
    for name, path in files:
        if path is not None and not path.is_file():
            problems.append(f"{name}={str(path)!r}: file not found")
    if settings.enable_ldap and not settings.ldap_search_base:
        problems.append(
            "ENABLE_LDAP=true needs LDAP_SEARCH_BASE, where people are looked up (dc=example,dc=org)"
        )
    if settings.ldap_app_dn and not settings.ldap_app_password:
        problems.append(
            "LDAP_APP_DN is set without LDAP_APP_PASSWORD; set both, or neither (anonymous search)"
        )
    if settings.forward_auth_file is not None and not settings.webui_url:
        problems.append(
            "FORWARD_AUTH_FILE needs WEBUI_URL: the address of wardgate's sign-in page, where the "
            "protected sites send people who are not signed in"
        )
    if settings.session_cookie_domain and settings.webui_url:
        host = (urlsplit(settings.webui_url).hostname or "").lower()
        domain = settings.session_cookie_domain
        if host != domain and not host.endswith("." + domain):
            problems.append(
                f"SESSION_COOKIE_DOMAIN={domain}: WEBUI_URL's host {host} is not within it; the "
                "browser would refuse the cookie"
            )
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        problems.append(f"DATA_DIR={str(settings.data_dir)!r}: not a directory")
    problems.extend(_operations_problems(settings))
    return problems


def _mail_problems(settings: Settings) -> list[str]:
    """Password-reset email: complete, and never a password sent in clear text."""
    problems: list[str] = []
    if settings.smtp_host is None:
        return problems
    if not settings.smtp_from:
        problems.append("SMTP_HOST needs SMTP_FROM, the sender address of the password-reset email")
    if not settings.webui_url:
        problems.append("SMTP_HOST needs WEBUI_URL: the reset link points at the public address")
    if bool(settings.smtp_username) != bool(settings.smtp_password):
        problems.append("SMTP_USERNAME / SMTP_PASSWORD: set both, or neither")
    loopback = settings.smtp_host in ("localhost", "127.0.0.1", "::1")
    if settings.smtp_security == "none" and settings.smtp_password and not loopback:
        problems.append(
            "SMTP_SECURITY=none with SMTP_PASSWORD: the password would cross the network in clear "
            "text; use starttls or tls (plain text is accepted only to a server on this machine)"
        )
    return problems


def _operations_problems(settings: Settings) -> list[str]:
    """Key rotation, metrics and traces."""
    problems: list[str] = []
    current = settings.webui_secret_key.get_secret_value() if settings.webui_secret_key else None
    if current is not None and any(
        k.get_secret_value() == current for k in settings.webui_secret_key_fallbacks
    ):
        problems.append("WEBUI_SECRET_KEY_FALLBACKS lists WEBUI_SECRET_KEY itself; list only earlier keys")
    if settings.webui_secret_key_fallbacks and settings.webui_secret_key is None:
        problems.append(
            "WEBUI_SECRET_KEY_FALLBACKS needs WEBUI_SECRET_KEY: a key generated into DATA_DIR "
            "cannot be rotated; set the new key explicitly"
        )
    if settings.metrics_token is not None and len(settings.metrics_token.get_secret_value()) < 32:
        problems.append("METRICS_TOKEN: at least 32 characters (`wardgate gen-secret` makes one)")
    problems.extend(_mail_problems(settings))
    secret = settings.forward_user_info_header_jwt_secret
    if secret is not None and len(secret.get_secret_value().encode()) < 32:
        problems.append(
            "FORWARD_USER_INFO_HEADER_JWT_SECRET: at least 32 bytes (HS256, RFC 7518 §3.2); set the same "
            "value in Open WebUI (`wardgate gen-secret` makes one)"
        )
    if bool(settings.otel_basic_auth_username) != bool(settings.otel_basic_auth_password):
        problems.append("OTEL_BASIC_AUTH_USERNAME / OTEL_BASIC_AUTH_PASSWORD: set both, or neither")
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


def read_environment(process: Mapping[str, str], env_file: str | None = ".env") -> dict[str, str]:
    """The process environment (handed in by the command line, the one place that reads it) over the
    values of a `.env` file (the environment wins)."""
    values: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(process)
    return values


def load_settings(
    env: Mapping[str, str], *, env_file: str | None = None, persist_secret: bool = True
) -> Settings:
    """Validate and complete the configuration of `env` (see `read_environment`), over the values of
    `env_file` when given; raise ConfigError listing every problem."""
    if env_file is not None:
        env = read_environment(env, env_file)
    values: dict[str, Any] = {k: v for k, v in env.items() if k != "security_headers"}
    headers, problems = checked_headers({name: env[name] for name in HEADER_ENV_NAMES if name in env})
    values["security_headers"] = headers
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        described = [_describe(error) for error in exc.errors()]
        problems = [text for _name, text in described] + problems
        # The rules across variables are still checked, with the refused values left at their
        # defaults, so that one run names every problem; a rule naming a refused variable is left
        # out (it would only repeat it).
        refused = {name for name, _text in described}
        kept = {k: v for k, v in values.items() if k not in refused}
        try:
            partial = Settings(**kept)
        except ValidationError:
            raise ConfigError(problems) from None
        problems += [p for p in cross_field_problems(partial) if not any(n in p for n in refused)]
        raise ConfigError(problems) from None
    problems += cross_field_problems(settings)
    if problems:
        raise ConfigError(problems)
    return _resolve_secret_key(settings, persist=persist_secret)


def display(field: str, value: object) -> str:
    """A settings value as `wardgate check` and /admin show it (secrets are never passed here)."""
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, re.Pattern):
        return str(value.pattern)
    if isinstance(value, frozenset):
        return ",".join(sorted(str(v.value if isinstance(v, Enum) else v) for v in value))
    if isinstance(value, tuple):
        return LIST_SEPARATORS.get(field, ",").join(str(v) for v in value)
    if field in URL_FIELDS:
        return mask_url(str(value))
    return str(value)


def redacted_settings(settings: Settings) -> dict[str, str]:
    """The effective settings by variable name, secrets replaced, for `wardgate check` and /admin."""
    shown: dict[str, str] = {}
    for field in Settings.model_fields:
        if field in ("security_headers", "secret_key_source"):
            continue
        value = getattr(settings, field)
        if field in SECRET_FIELDS:
            shown[env_name(field)] = "(set, redacted)" if value is not None else "(not set)"
        else:
            shown[env_name(field)] = display(field, value)
    return shown
