"""Single sign-on settings: the parse rules of its list and key variables, and its start-up checks.

`wardgate.config.settings` owns the fields (Open WebUI's names); this module holds what is specific to single
sign-on so that config.py stays readable: `sign_on_problems(settings)` is called from the cross-field
checks and lists every problem at once (a half-configured provider, an insecure provider URL, an
invalid encryption key...). Nothing here performs I/O.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet
from pydantic import AliasChoices

if TYPE_CHECKING:  # config.py imports this module
    from wardgate.config.settings import Settings


def env_name(settings: Settings, field: str) -> str:
    """The variable a Settings field is read from (its first alias)."""
    alias = type(settings).model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if alias else field.upper()


_SIGN_ON_PAIRS = (
    ("Google", "google_client_id", "google_client_secret"),
    ("Microsoft", "microsoft_client_id", "microsoft_client_secret"),
    ("GitHub", "github_client_id", "github_client_secret"),
)
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def split_list(value: str, separator: str = ",") -> list[str]:
    """A `separator`-delimited list without blanks (Open WebUI's list variables)."""
    return [item.strip() for item in value.split(separator) if item.strip()]


def parse_blocked_groups(value: str) -> list[str]:
    """`OAUTH_BLOCKED_GROUPS`: a JSON array of strings, or a comma-separated list (Open WebUI)."""
    text = value.strip()
    if not text.startswith("["):
        return split_list(text)
    parsed = json.loads(text)  # ValueError for bad JSON: reported by _sign_on_problems
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError("expected a JSON array of strings")
    return [item.strip() for item in parsed if item.strip()]


def parse_fernet_keys(value: str) -> list[str]:
    """`OAUTH_SESSION_TOKEN_ENCRYPTION_KEY`: Fernet keys separated by `;` or `,`, newest first."""
    keys = split_list(value.replace(";", ","))
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(
                f"key {position} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded bytes, "
                "as cryptography's Fernet.generate_key() makes; see docs/sso.md)"
            ) from None
    if not keys:
        raise ValueError("no key given; unset the variable to derive one from WEBUI_SECRET_KEY")
    return keys


def provider_url_problem(name: str, url: str | None) -> str | None:
    """Provider endpoints are fetched server-side: https, or plain http on a loopback address only."""
    if url is None:
        return None
    match = re.fullmatch(r"(https?)://([^/?#\s]+)(?:[/?][^\s#]*)?", url)
    if not match:
        return f"{name}={url[:80]!r}: expected an absolute https:// URL"
    host = match.group(2).rsplit("@", 1)[-1]
    host = host if host.startswith("[") else host.split(":", 1)[0]
    if match.group(1) == "http" and host not in _LOOPBACK_HOSTS:
        return f"{name}={url[:80]!r}: must use https (plain http is accepted for loopback addresses only)"
    return None


def sign_on_problems(settings: Settings) -> list[str]:
    """Every single-sign-on misconfiguration: half-configured providers, bad URLs, keys and lists."""
    s = settings
    problems: list[str] = []
    for label, id_field, secret_field in _SIGN_ON_PAIRS:
        if bool(getattr(s, id_field)) != bool(getattr(s, secret_field)):
            problems.append(
                f"{env_name(s, id_field)} / {env_name(s, secret_field)}: set both to enable "
                f"{label} sign-in, or neither"
            )
    if s.microsoft_client_id and not s.microsoft_client_tenant_id:
        problems.append("MICROSOFT_CLIENT_TENANT_ID: required for Microsoft sign-in (a tenant id, or common)")
    public = s.oauth_code_challenge_method is not None and not s.oauth_client_secret
    if s.oauth_client_id and not (s.oauth_client_secret or public):
        problems.append(
            "OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET: set both (or OAUTH_CODE_CHALLENGE_METHOD=S256 for a "
            "public client) to enable OpenID Connect sign-in"
        )
    if bool(s.oauth_client_id) != bool(s.openid_provider_url):
        problems.append("OAUTH_CLIENT_ID / OPENID_PROVIDER_URL: set both to enable OpenID Connect sign-in")
    if s.oauth_client_secret and not s.oauth_client_id:
        problems.append("OAUTH_CLIENT_SECRET: set without OAUTH_CLIENT_ID")
    if s.oauth_code_challenge_method not in (None, "S256"):
        problems.append(
            f"OAUTH_CODE_CHALLENGE_METHOD={s.oauth_code_challenge_method[:20]!r}: only S256 is supported "
            "(PKCE with S256 is always used)"
        )
    problems.extend(_sign_on_value_problems(s))
    return problems


def _sign_on_value_problems(s: Settings) -> list[str]:
    problems: list[str] = []
    for scope_field in ("google_oauth_scope", "microsoft_oauth_scope", "oauth_scopes"):
        if "openid" not in getattr(s, scope_field).split():
            problems.append(f"{env_name(s, scope_field)}: must include the openid scope")
    for url_field in (
        "google_openid_provider_url",
        "microsoft_client_login_base_url",
        "github_base_url",
        "github_api_base_url",
        "openid_provider_url",
        "openid_end_session_endpoint",
    ):
        problem = provider_url_problem(env_name(s, url_field), getattr(s, url_field))
        if problem:
            problems.append(problem)
    for uri_field in (
        "google_redirect_uri",
        "microsoft_redirect_uri",
        "github_client_redirect_uri",
        "openid_redirect_uri",
        "webui_auth_signout_redirect_url",
    ):
        value = getattr(s, uri_field)
        if value is not None and not re.fullmatch(r"https?://[^/?#\s]+(?:/[^\s#]*)?", value):
            problems.append(f"{env_name(s, uri_field)}={value[:80]!r}: expected an absolute http(s) URL")
    try:
        parse_blocked_groups(s.oauth_blocked_groups)
    except ValueError as exc:
        problems.append(f"OAUTH_BLOCKED_GROUPS={s.oauth_blocked_groups[:80]!r}: {exc}")
    if s.oauth_session_token_encryption_key is not None:
        try:
            parse_fernet_keys(s.oauth_session_token_encryption_key.get_secret_value())
        except ValueError as exc:
            problems.append(f"OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=(redacted): {exc}")
    return problems
