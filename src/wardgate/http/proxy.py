"""The reverse proxy: authenticated requests stream to their upstream and back, unbuffered.

Request bodies stream upstream as they arrive and responses stream back chunk by chunk (SSE, Ollama's
NDJSON); a client that disconnects cancels the upstream request. Redirects are passed back, never
followed. Wardgate's own credentials never reach an upstream: the `token` cookie is removed, and so is
the client's Authorization header whenever it was wardgate's credential. Identity headers arriving
from the client are always removed before wardgate adds its own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import quote

import httpx2
from starlette.background import BackgroundTask
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from wardgate.http.deps import TOKEN_COOKIE, Caller
from wardgate.http.security_headers import PROXIED_STATE_KEY
from wardgate.proxy.upstreams import FORWARDING, HOP_BY_HOP, Upstream

log = logging.getLogger(__name__)
SMALL_ANSWER = 64 * 1024  # bytes; larger or unsized answers are streamed


@dataclass(frozen=True, slots=True)
class IdentityHeaders:
    """Names of the headers that tell the upstream who is signed in (Open WebUI's trusted-header mode)."""

    email: str
    name: str
    groups: str
    role: str

    @property
    def lowered(self) -> frozenset[str]:
        """The names, lower-cased, for stripping."""
        return frozenset(h.lower() for h in (self.email, self.name, self.groups, self.role) if h)

    def values(self, principal: Caller) -> list[tuple[str, str]]:
        """The headers for this user; the name is URL-encoded as Open WebUI expects (non-ASCII safe)."""
        user = principal.user
        pairs = [
            (self.email, user.email),
            (self.name, quote(user.name, safe=" ")),
            (self.role, user.role),
            (self.groups, ",".join(getattr(user, "groups", ()))),
        ]
        return [(name, value) for name, value in pairs if name]


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(","))
    return tokens


def _without_wardgate_cookie(cookie_header: str) -> str:
    cookies = SimpleCookie()
    cookies.load(cookie_header)
    kept = [f"{key}={morsel.coded_value}" for key, morsel in cookies.items() if key != TOKEN_COOKIE]
    return "; ".join(kept)


def upstream_request_headers(
    request: HTTPConnection,
    principal: Caller,
    upstream: Upstream,
    identity: IdentityHeaders,
    api_key_header: str,
    is_ours: Callable[[str], bool],
) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, forwarding, identity and wardgate's credentials; plus ours."""
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    dropped = HOP_BY_HOP | FORWARDING | identity.lowered | _connection_tokens(raw) | {"host", api_key_header}
    authorization = request.headers.get("authorization", "")
    if upstream.strips_authorization or principal.via != "cookie" or is_ours(authorization):
        dropped = dropped | {"authorization"}  # wardgate's credential, or meant for a model API
    headers: list[tuple[str, str]] = []
    for name, value in raw:
        lowered = name.lower()
        if lowered in dropped:
            continue
        if lowered == "cookie":
            value = _without_wardgate_cookie(value)
            if not value:
                continue
        headers.append((name, value))
    client = request.client.host if request.client else ""
    headers += [
        ("X-Forwarded-For", client),
        ("X-Forwarded-Proto", request.url.scheme),
        ("X-Forwarded-Host", request.headers.get("host", "")),
    ]
    headers += identity.values(principal)
    headers += list(upstream.inject_headers)
    return headers


def _response_headers(upstream_response: httpx2.Response) -> list[tuple[str, str]]:
    raw = upstream_response.headers.multi_items()
    dropped = HOP_BY_HOP | _connection_tokens(raw)
    kept = []
    for name, value in raw:
        lowered = name.lower()
        if lowered in dropped:
            continue
        if lowered == "set-cookie" and value.split("=", 1)[0].strip() == TOKEN_COOKIE:
            continue  # the upstream may not overwrite wardgate's session cookie
        kept.append((name, value))
    return kept


class ReverseProxy:
    """Forward one authenticated request to its upstream and stream the answer back."""

    def __init__(
        self,
        client: httpx2.AsyncClient,
        identity: IdentityHeaders,
        api_key_header: str,
        is_ours: Callable[[str], bool],
    ) -> None:
        self._client = client
        self.identity = identity
        self.api_key_header = api_key_header.lower()
        self.is_ours = is_ours

    async def forward(self, request: Request, principal: Caller, upstream: Upstream) -> Response:
        """Send the request upstream (body streamed) and stream the response back."""
        setattr(request.state, PROXIED_STATE_KEY, True)
        headers = upstream_request_headers(
            request, principal, upstream, self.identity, self.api_key_header, self.is_ours
        )
        url = upstream.target(request.url.path, request.url.query)
        has_body = request.method not in ("GET", "HEAD", "OPTIONS") or "content-length" in request.headers
        outgoing = self._client.build_request(
            request.method, url, headers=headers, content=request.stream() if has_body else None
        )
        try:
            answer = await self._client.send(outgoing, stream=True, follow_redirects=False)
        except httpx2.TimeoutException:
            log.warning("upstream %s timed out", upstream.name)
            return JSONResponse({"detail": f"The {upstream.name} service did not answer in time."}, 504)
        except httpx2.HTTPError as exc:
            log.warning("upstream %s unavailable (%s)", upstream.name, type(exc).__name__)
            return JSONResponse({"detail": f"The {upstream.name} service is unavailable."}, 502)
        if _is_small(answer):
            return await _buffered(answer)
        return _streaming(answer)


def _is_small(answer: httpx2.Response) -> bool:
    """A sized answer of at most 64 KiB that is not an event stream: cheaper sent whole than relayed."""
    length = answer.headers.get("content-length", "")
    content_type = answer.headers.get("content-type", "")
    return length.isdigit() and int(length) <= SMALL_ANSWER and "text/event-stream" not in content_type


async def _buffered(answer: httpx2.Response) -> Response:
    try:
        body = b"".join([chunk async for chunk in answer.aiter_raw()])  # as sent: still encoded
    except httpx2.HTTPError as exc:
        log.warning("upstream answer broke off (%s)", type(exc).__name__)
        return JSONResponse({"detail": "The upstream answer broke off."}, 502)
    finally:
        await answer.aclose()
    response = Response(body, status_code=answer.status_code)
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _response_headers(answer)
    ]
    return response


def _streaming(answer: httpx2.Response) -> StreamingResponse:
    response = StreamingResponse(
        _relay(answer), status_code=answer.status_code, background=BackgroundTask(answer.aclose)
    )
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in _response_headers(answer)
    ]
    return response


async def _relay(answer: httpx2.Response) -> AsyncIterator[bytes]:
    """Chunks as the upstream sends them; closing (on client disconnect) cancels the upstream request."""
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx2.HTTPError as exc:
        log.warning("upstream stream broke off (%s)", type(exc).__name__)
    finally:
        await answer.aclose()
