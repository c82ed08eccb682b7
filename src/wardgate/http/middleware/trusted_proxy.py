"""Believe `X-Forwarded-*` only from the proxies listed in `FORWARDED_ALLOW_IPS`.

Open WebUI runs uvicorn with `FORWARDED_ALLOW_IPS='*'`, so any client can choose its own IP address
(defeating IP rate limits) and scheme. Here, only when the direct peer is trusted:

- `X-Forwarded-For` is walked from the right, skipping trusted hops; the first untrusted address is
  the client (every proxy appends the peer it saw, so only the entries right of the last untrusted
  hop were written by proxies we trust; the left ones are whatever the client sent). When every hop
  is trusted, the leftmost is the client. An unparsable entry stops the walk: the nearest trusted hop
  is then taken as the client, so garbage never becomes a rate-limit key.
- `X-Forwarded-Proto` (last value: the nearest proxy's) sets `scope["scheme"]`, mapped to http/https
  for HTTP and ws/wss for WebSocket scopes.
- `X-Forwarded-Host` (last value), if it is a plausible host[:port], replaces the `Host` header.

Afterwards the forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are removed from the
scope in every case, trusted peer or not: `scope["client"]`, `scope["scheme"]` and `Host` are then
the only truth, and no later component can read a client-written value by mistake. (`Forwarded`,
RFC 7239, and `X-Forwarded-Port`/`-Prefix` are not interpreted.)

`*` trusts every peer: use it only when nothing but the proxy can reach wardgate. A Unix-socket peer
(no `scope["client"]`) is trusted only under `*`. Peers at IPv4-mapped IPv6 addresses
(::ffff:10.0.0.1) are compared as IPv4, so list IPv4 proxies in IPv4 form.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from wardgate.config.network import Address, TrustedProxies, address

_FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"forwarded",
        b"x-real-ip",
    }
)
_SCHEMES = {
    "http": {"http": "http", "ws": "http", "https": "https", "wss": "https"},
    "websocket": {"http": "ws", "ws": "ws", "https": "wss", "wss": "wss"},
}
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?", re.ASCII)


def _forwarded_address(entry: str) -> Address | None:
    """An `X-Forwarded-For` entry: an address, possibly `[v6]`, `[v6]:port` or `v4:port` (Azure, IIS)."""
    if entry.startswith("["):
        return address(entry[1:].split("]", 1)[0])
    if entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    return address(entry)


def _values(forwarded: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every comma-separated item of the headers called `name`, in order (RFC 9110 §5.3)."""
    items: list[str] = []
    for key, value in forwarded:
        if key == name:
            items.extend(item.strip() for item in value.decode("latin-1").split(","))
    return [item for item in items if item]


class TrustedProxyMiddleware:
    """Resolve client address, scheme and host from a trusted proxy's headers; drop them otherwise."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a resolved copy of HTTP and WebSocket scopes to the app."""
        if scope["type"] in _SCHEMES:
            scope = self._resolved(scope)
        await self.app(scope, receive, send)

    def _resolved(self, scope: Scope) -> Scope:
        if not any(name in _FORWARDING for name, _value in scope["headers"]):
            return scope  # nothing to believe or drop (ASGI header names are lower-case)
        forwarded: list[tuple[bytes, bytes]] = []
        kept: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            (forwarded if name.lower() in _FORWARDING else kept).append((name.lower(), value))
        # A shallow copy: scope["state"] stays the same dict for every layer.
        resolved = {**scope, "headers": kept}
        if not forwarded:
            return resolved  # nothing to believe or drop: no need to ask whether the peer is trusted
        peer = scope.get("client")
        if not self.trusted.trusts(peer[0] if peer else None):
            return resolved
        client = self._client(_values(forwarded, b"x-forwarded-for"))
        if client is not None:
            resolved["client"] = (client, 0)
        protos = _values(forwarded, b"x-forwarded-proto")
        scheme = _SCHEMES[scope["type"]].get(protos[-1].lower()) if protos else None
        if scheme is not None:
            resolved["scheme"] = scheme
        hosts = _values(forwarded, b"x-forwarded-host")
        if hosts and len(hosts[-1]) <= 260 and _HOST.fullmatch(hosts[-1]):
            kept[:] = [(name, value) for name, value in kept if name != b"host"]
            kept.append((b"host", hosts[-1].encode("latin-1")))
        return resolved

    def _client(self, chain: list[str]) -> str | None:
        """The rightmost untrusted address of the chain; None when the chain gives nothing usable."""
        client: Address | None = None
        for entry in reversed(chain):
            hop = _forwarded_address(entry)
            if hop is None:
                break
            client = hop
            if not self.trusted.trusts(str(hop)):
                break
        return None if client is None else str(client)
