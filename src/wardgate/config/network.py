"""Configuration values about the network: origins, trusted proxies, and the URLs of stores and services.

Parsed once at load, like every value (see `values`); the HTTP layer uses the results as they are.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from wardgate.config.values import CONTROL, split_list, unique

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# --- origins (RFC 6454) -----------------------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A DNS name or IPv4 address, or an IPv6 address (urlsplit's hostname drops the brackets).
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*|[0-9a-f:.]*:[0-9a-f:.]*", re.ASCII)
_ORIGIN_SHAPE = re.compile(r"https?://[^/?#@\x00-\x20\x7f]+", re.IGNORECASE | re.ASCII)
ORIGIN_FORM = "scheme://host[:port] with http or https and no path, e.g. https://chat.example.com"


def origin_of(url: str) -> str | None:
    """The serialized origin (RFC 6454 §6.2) of an absolute http(s) URL, or None if it has none.

    Scheme and host are lower-cased and a default port is dropped, which is how browsers write the
    `Origin` header, so equal origins compare equal as strings.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or out of range
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or not _HOSTNAME.fullmatch(host):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin(entry: str) -> str:
    """One origin, canonical; ValueError for anything beyond scheme://host[:port].

    A path (even "/"), a query, user info or a control character (which urlsplit silently drops)
    means the entry is not an origin: a browser's Origin header would never equal it.
    """
    found = origin_of(entry)
    if found is None or not _ORIGIN_SHAPE.fullmatch(entry):
        raise ValueError(f"{entry[:80]!r} is not an origin: expected {ORIGIN_FORM}")
    return found


def cors_origins(value: str) -> tuple[str, ...]:
    """`CORS_ALLOW_ORIGIN`: `;`-separated exact origins (canonical, without repeats), or `*` alone."""
    entries = split_list(value, ";")
    if "*" in entries:
        if len(entries) > 1:
            raise ValueError("'*' allows every origin; it cannot be combined with a list")
        return ("*",)
    return unique(tuple(origin(entry) for entry in entries))


# --- trusted proxies ----------------------------------------------------------------------------------

_PROXY_FORM = "an IP address (10.0.0.1, ::1) or a CIDR network (10.0.0.0/8, fd00::/8), or * alone"


def address(text: str) -> Address | None:
    """An IP address, IPv4-mapped IPv6 addresses unwrapped (::ffff:10.0.0.1 is 10.0.0.1)."""
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The peers whose forwarding headers are believed (`FORWARDED_ALLOW_IPS`)."""

    networks: tuple[Network, ...] = ()
    trust_all: bool = False

    def trusts(self, host: str | None) -> bool:
        """Whether the peer at `host` is a trusted proxy (no IP, e.g. a Unix socket: only under `*`)."""
        if self.trust_all:
            return True
        found = address(host) if host else None
        return found is not None and any(found in network for network in self.networks)

    def __str__(self) -> str:
        return "*" if self.trust_all else ",".join(str(network) for network in self.networks)


def trusted_proxies(value: str) -> TrustedProxies:
    """`FORWARDED_ALLOW_IPS`: comma-separated IPs or CIDR networks, or `*` alone."""
    entries = split_list(value)
    if "*" in entries:
        if len(entries) > 1:
            raise ValueError("'*' trusts every peer; it cannot be combined with other entries")
        return TrustedProxies(trust_all=True)
    networks = []
    for entry in entries:
        try:
            # strict: 10.0.0.1/8 is refused rather than silently widened to 10.0.0.0/8.
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(f"entry {entry[:60]!r}: {exc}; expected {_PROXY_FORM}") from None
    return TrustedProxies(networks=tuple(networks))


def address_bucket(host: str | None, ipv6_prefix: int) -> str:
    """The key under which an address is counted (rate limits, connection caps): an IPv4 address as
    it is, an IPv6 address as its network of `ipv6_prefix` bits.

    One IPv6 subscriber commonly holds a whole /64 (RFC 6177): counting per /128 would hand a client
    a fresh bucket for every address it rotates to. IPv4-mapped IPv6 addresses count as IPv4.
    """
    found = address(host) if host else None
    if found is None:
        return host or "unknown"
    if isinstance(found, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((found, ipv6_prefix), strict=False))
    return str(found)


# --- URLs ---------------------------------------------------------------------------------------------

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DATABASE_FORM = "expected sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/db"


def web_url(value: str) -> str:
    """An absolute http(s) URL with a host and no fragment (a redirect target or a public address)."""
    parts = _split(value, "an absolute http(s) URL such as https://chat.example.com")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ValueError("expected an absolute http(s) URL such as https://chat.example.com")
    return value


def site_url(value: str) -> str:
    """`WEBUI_URL`: the public URL, whose origin is the site's origin (no query, no trailing slash)."""
    web_url(value)
    parts = urlsplit(value)
    if origin_of(value) is None or parts.query or parts.username or parts.password:
        raise ValueError("expected an absolute http(s) URL such as https://chat.example.com")
    return value.rstrip("/")


def upstream_url(value: str) -> str:
    """The base URL of a service behind wardgate: http(s), a host, no query, fragment or credentials."""
    parts = _split(value, "an absolute http(s) URL such as http://127.0.0.1:11434")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL such as http://127.0.0.1:11434")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not contain a query, a fragment or credentials")
    return value


def provider_url(value: str) -> str:
    """A sign-in provider endpoint, fetched server-side: https, or plain http on loopback only."""
    parts = _split(value, "an absolute https:// URL")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ValueError("expected an absolute https:// URL")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError("must use https (plain http is accepted for loopback addresses only)")
    return value


def database_url(value: str) -> str:
    """`DATABASE_URL`, with Open WebUI's `postgres://` and `postgresql://` forms moved to psycopg 3.

    SQLite: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (the path may hold spaces),
    or `sqlite://` (in memory). PostgreSQL: `postgresql+psycopg://user:password@host[:port]/database`.
    """
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            value = "postgresql+psycopg://" + value.removeprefix(prefix)
    if CONTROL.search(value):
        raise ValueError(DATABASE_FORM)
    if value.startswith("sqlite:"):
        if value != "sqlite://" and not value.startswith("sqlite:///"):
            raise ValueError(DATABASE_FORM)
        return value
    if not value.startswith("postgresql+psycopg://"):
        scheme = value.split(":", 1)[0][:30]
        raise ValueError(f"unsupported database {scheme!r}; {DATABASE_FORM}")
    parts = _split(value, DATABASE_FORM)
    if not parts.hostname and not parts.netloc.startswith("@") and parts.netloc:
        raise ValueError(DATABASE_FORM)
    if parts.netloc.endswith(":"):  # an empty port: "host:" with nothing after the colon
        raise ValueError(f"the port is empty; {DATABASE_FORM}")
    return value


def redis_url(value: str) -> str:
    """`REDIS_URL`: redis://, rediss:// (TLS) or unix://."""
    form = "redis://[:password@]host:6379/0, rediss:// (TLS) or unix:///path/to/redis.sock"
    parts = _split(value, form)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise ValueError(f"expected {form}")
    return value


def _split(value: str, form: str) -> SplitResult:
    if CONTROL.search(value) or " " in value:
        raise ValueError(f"expected {form}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"expected {form}") from None
    return parts


def mask_url(url: str) -> str:
    """Hide the password part of a URL's user information."""
    # Up to the last "@" before the path: a password may itself contain "@".
    return re.sub(r"(://[^:/@]*:)[^/?#]*@", r"\1***@", url)
