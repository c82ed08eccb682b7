"""The value types of configuration and the one parser for each form a variable can take.

Settings fields hold these values, parsed once at load: components never parse strings. Each parser
raises ValueError with a message naming the accepted form, which `load_settings` puts next to the
variable's name. Pure: no I/O, nothing else of wardgate.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from cryptography.fernet import Fernet
from email_validator import EmailNotValidError, validate_email
from limits import RateLimitItem, parse


class Role(StrEnum):
    """What an account may do: `pending` waits for approval, `user` uses services, `admin` runs the site."""

    PENDING = "pending"
    USER = "user"
    ADMIN = "admin"


ROLE_NAMES = tuple(role.value for role in Role)

# Any C0 control character or DEL: a value is one line of printable text (a CR or LF in a value that
# ends up in a header or a log line would split it).
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_list(value: str, separator: str | None = ",") -> tuple[str, ...]:
    """A delimited list without blanks, each item trimmed; `separator=None` splits on whitespace.

    The one list parser of every list variable (`;` for CORS origins, `,` for most, the configured
    separator for claims, whitespace for OAuth scopes).
    """
    return tuple(item.strip() for item in value.split(separator) if item.strip())


def unique(items: tuple[str, ...]) -> tuple[str, ...]:
    """Items without repeats, in their first order."""
    return tuple(dict.fromkeys(items))


def roles(value: str) -> frozenset[Role]:
    """A comma-separated list of role names (`user,admin`)."""
    names = split_list(value.lower())
    unknown = [name for name in names if name not in ROLE_NAMES]
    if unknown:
        raise ValueError(
            f"unknown role {unknown[0][:20]!r}; expected a comma-separated list of {', '.join(ROLE_NAMES)}"
        )
    return frozenset(Role(name) for name in names)


# --- durations ------------------------------------------------------------------------------------

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
    if seconds > 100 * 366 * 86400:
        raise ValueError("a lifetime of more than a hundred years; use -1 for no expiry")
    return timedelta(seconds=seconds)


# --- rates ------------------------------------------------------------------------------------------

RATE_FORM = "<count>/<period> such as 5/3m, 20/180s, 10/minute or 100/hour"
_SHORT_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*(s|m|h|d)\s*$")
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit as configured (`5/3m`) and as the `limits` library counts it."""

    text: str
    item: RateLimitItem

    def __str__(self) -> str:
        return self.text


def parse_rate(text: str) -> Rate:
    """Parse a rate such as `5/3m` or `10/minute`; raise ValueError naming the accepted form."""
    text = text.strip()
    spelled = text
    short = _SHORT_RATE.match(text)
    if short:
        count, amount, unit = short.groups()
        spelled = f"{count} per {int(amount) * _RATE_UNITS[unit]} second"
    if len(text) > 64 or CONTROL.search(text):
        raise ValueError(f"expected {RATE_FORM}")
    try:
        item = parse(spelled)
    except ValueError:
        raise ValueError(f"expected {RATE_FORM}") from None
    if item.amount < 1:
        raise ValueError(f"expected {RATE_FORM} with a count of at least 1")
    if re.search(r"(?:/|per)\s*0+\s*[a-z]", spelled.lower()):
        # `limits` reads a period multiple of 0 as 1: "5/0m" must not quietly mean 5 per minute.
        raise ValueError(f"expected {RATE_FORM} with a period of at least one second")
    return Rate(text, item)


# --- paths --------------------------------------------------------------------------------------------

_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")
MAX_PATH_PREFIXES = 32


def is_plain_path(path: str) -> bool:
    """False for paths an upstream could read differently: dot segments, `//`, `\\`, `%`, `;`, `#`,
    controls.

    A prefix check on `/ollama/api/../pull` would pass while the upstream serves `/ollama/pull`;
    such paths are refused wherever a path restriction applies. `;` opens path parameters, which
    Tomcat, Jetty and Spring drop before resolving (`/api/..;/admin` is `/admin` there: a key scoped
    to `/api` reached it, found by review), and `#` a fragment some parsers cut off.
    """
    if not path.startswith("/") or "//" in path or "\\" in path or "%" in path:
        return False
    if ";" in path or "#" in path:
        return False
    if any(ord(c) < 33 or ord(c) == 127 for c in path):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def path_prefixes(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validated path prefixes (API-key scopes, `API_KEYS_ALLOWED_ENDPOINTS`); ValueError otherwise."""
    if len(values) > MAX_PATH_PREFIXES:
        raise ValueError(f"at most {MAX_PATH_PREFIXES} path prefixes")
    cleaned = []
    for value in values:
        text = value.strip()
        if not _PATH.fullmatch(text) or len(text) > 256 or not is_plain_path(text):
            raise ValueError(f"{text[:60]!r} is not a path prefix such as /ollama/api")
        cleaned.append(text)
    return unique(tuple(cleaned))


# --- names --------------------------------------------------------------------------------------------

HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# A claim name or dotted path (`realm_access.roles`); some providers use URLs as names.
CLAIM_PATH = re.compile(r"[\x21-\x7e]{1,256}")


def printable(value: str, *, limit: int) -> str:
    """One line of printable text, at most `limit` characters (after trimming)."""
    if CONTROL.search(value):
        raise ValueError("contains a control character (such as a line break); expected one line of text")
    if len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    return value


# --- addresses, groups and keys -----------------------------------------------------------------------

EMAIL_FORM = "an email address such as admin@example.com"


def email_address(value: str) -> str:
    """An email address, trimmed, validated and lower-cased (the one rule for every address)."""
    try:
        validated = validate_email(
            value.strip(), check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except EmailNotValidError:
        raise ValueError(f"expected {EMAIL_FORM}") from None
    return validated.normalized.lower()


_DOMAIN = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,61}[a-z0-9]")


def cookie_domain(value: str) -> str:
    """A parent domain for the session cookie (`example.com`: every subdomain shares the sign-in)."""
    domain = value.strip().lower().removeprefix(".")
    if not _DOMAIN.fullmatch(domain) or len(domain) > 253:
        raise ValueError("expected a domain name such as example.com (no scheme, port or path)")
    return domain


LDAP_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")  # RFC 4512 §1.4 descr
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")


def host_name(value: str) -> str:
    """A host name or IP address (no scheme, port or path)."""
    if not _HOST_NAME.fullmatch(value.strip()):
        raise ValueError("expected a host name or IP address such as ldap.example.com (no scheme or port)")
    return value.strip()


def ldap_filter(value: str) -> str:
    """An LDAP filter fragment (RFC 4515) to AND into the user search: parenthesised and balanced."""
    text = value.strip()
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if not (text.startswith("(") and text.endswith(")")) or depth != 0:
        raise ValueError("expected a parenthesised LDAP filter such as (objectClass=person)")
    return text


def request_path(value: str) -> str:
    """A plain request path such as /api/v1/auths/signout (no dot segments, `//`, `%` or controls)."""
    if not is_plain_path(value):
        raise ValueError("expected a plain path such as /api/v1/auths/signout")
    return value


def cipher_list(value: str) -> str:
    """An OpenSSL cipher list (`LDAP_CIPHERS`), checked now rather than silently ignored later."""
    try:
        ssl.create_default_context().set_ciphers(value)
    except ssl.SSLError:
        raise ValueError("expected an OpenSSL cipher list such as ECDHE+AESGCM:!aNULL") from None
    return value


def parse_step_up_age(value: str) -> timedelta:
    """How long a second factor counts as recent: a duration from one minute to one day."""
    form = "a duration from 1m to 1d, such as 10m or 1h"
    try:
        age = parse_duration(value)
    except ValueError:
        raise ValueError(f"expected {form}") from None
    if age is None or not timedelta(minutes=1) <= age <= timedelta(days=1):
        raise ValueError(f"expected {form}")
    return age


def json_or_comma_list(value: str) -> tuple[str, ...]:
    """A JSON array of strings, or a comma-separated list (Open WebUI's `OAUTH_BLOCKED_GROUPS`)."""
    text = value.strip()
    if not text.startswith("["):
        return split_list(text)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise ValueError("expected a JSON array of strings or a comma-separated list") from None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise ValueError("expected a JSON array of strings")
    return tuple(item.strip() for item in parsed if item.strip())


def fernet_keys(value: str) -> tuple[str, ...]:
    """Fernet keys separated by `;` or `,`, newest first (for rotation with MultiFernet)."""
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


def secret_list(value: str) -> tuple[str, ...]:
    """`WEBUI_SECRET_KEY_FALLBACKS`: earlier secret keys, comma-separated, newest first (at most 8).

    Spaces around each key are dropped (generated keys have none); blank and repeated entries
    are refused.
    """
    keys = tuple(key.strip() for key in value.split(","))
    if len(keys) > 8:
        raise ValueError("at most 8 earlier keys; drop the oldest once their tokens have expired")
    for position, key in enumerate(keys, start=1):
        if not key:
            raise ValueError(f"key {position} of {len(keys)} is blank; separate keys with single commas")
        if len(key) > 4096:
            raise ValueError(f"key {position} of {len(keys)} is longer than 4096 characters")
    if len(set(keys)) != len(keys):
        raise ValueError("a key is listed twice")
    return keys


_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"  # "_": container and service names
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?", re.ASCII)


def listen_host(value: str) -> str:
    """A host name or IP address to listen on (`HOST`)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if len(value) > 253 or not _HOSTNAME.fullmatch(value):
            raise ValueError("expected an IP address (127.0.0.1, 0.0.0.0, ::) or a host name") from None
    return value


def email_domains(value: str) -> tuple[str, ...]:
    """`OAUTH_ALLOWED_DOMAINS`: comma-separated email domains, lower-cased, or `*` for any."""
    domains = unique(split_list(value.lower()))
    if "*" in domains:
        if len(domains) > 1:
            raise ValueError("'*' allows every domain; it cannot be combined with a list")
        return domains
    for domain in domains:
        if len(domain) > 253 or not _HOSTNAME.fullmatch(domain):
            raise ValueError(f"{domain[:60]!r} is not a domain such as example.com")
    return domains
