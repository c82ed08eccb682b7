"""Provider metadata: OpenID Connect discovery documents and signing keys, fetched once and cached.

Nothing is fetched at start-up (a provider that is down must not stop wardgate); the first sign-in
fetches, later ones reuse the cache for an hour. An ID token signed with a key id the cached set does
not know triggers one refetch (key rotation, OIDC Core §10.1.1).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from wardgate.config.network import provider_url
from wardgate.errors import ProviderError
from wardgate.oauth.presets import ProviderConfig
from wardgate.oauth.refusals import UNREACHABLE

log = logging.getLogger(__name__)
_WELL_KNOWN = "/.well-known/openid-configuration"
# Asymmetric algorithms only: "none" and HMAC (keyed with the client secret) are never accepted.
_SIGNING_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """The endpoints and capabilities of one provider (RFC 8414 / OIDC Discovery §3 names)."""

    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    end_session_endpoint: str | None = None
    signing_algs: tuple[str, ...] = ("RS256",)
    token_auth_methods: tuple[str, ...] = ("client_secret_basic",)
    iss_parameter: bool = False  # RFC 9207 §3: then every authorization response must carry `iss`


def static_metadata(provider: ProviderConfig) -> ServerMetadata:
    """Plain OAuth 2.0 providers without discovery (GitHub): the configured endpoints."""
    if not (provider.authorize_url and provider.token_url):
        raise ValueError(f"provider {provider.id} has neither discovery nor endpoints")
    return ServerMetadata(
        issuer=provider.issuer,
        authorization_endpoint=provider.authorize_url,
        token_endpoint=provider.token_url,
        userinfo_endpoint=provider.userinfo_url,
        end_session_endpoint=provider.end_session_endpoint,
    )


def parse_discovery(provider: ProviderConfig, document: Any) -> ServerMetadata:
    """Validate a discovery document (OIDC Discovery §3, §4.3); ValueError names what is wrong."""
    if not isinstance(document, dict):
        raise ValueError("the discovery document is not a JSON object")
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(document.get(name), str):
            raise ValueError(f"the discovery document has no {name}")
    issuer: str = document["issuer"]
    url = provider.discovery_url or ""
    path = urlsplit(url).path
    if path.endswith(_WELL_KNOWN) and "{" not in issuer and provider.issuer_matches_discovery_url:
        # §4.3: the issuer must be exactly the URL discovery was fetched from, minus the suffix.
        # (Microsoft names a tenant by domain in the URL but by id in the issuer.)
        expected = url.split("?", 1)[0].removesuffix(_WELL_KNOWN)
        if issuer.rstrip("/") != expected.rstrip("/"):
            raise ValueError(f"issuer {issuer[:100]!r} does not match the discovery URL")
    endpoints = {
        name: document.get(name)
        for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
    }
    endpoints["end_session_endpoint"] = provider.end_session_endpoint or document.get("end_session_endpoint")
    for name, value in endpoints.items():
        if value is not None and not (isinstance(value, str) and _is_provider_url(value)):
            raise ValueError(f"{name} must be an https URL")
    algs = tuple(
        a for a in document.get("id_token_signing_alg_values_supported", ["RS256"]) if a in _SIGNING_ALGS
    )
    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])
    return ServerMetadata(
        issuer=issuer,
        signing_algs=algs or ("RS256",),
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)),
        iss_parameter=document.get("authorization_response_iss_parameter_supported") is True,
        **endpoints,  # type: ignore[arg-type]  # checked above: str or None
    )


KEY_REFRESH_GAP = 30.0  # seconds between two key-set fetches forced by an unknown `kid`


class ProviderDirectory:
    """Metadata and key sets per provider, cached for `ttl` seconds."""

    def __init__(self, http: httpx2.AsyncClient, *, ttl: float = 3600.0) -> None:
        self._http = http
        self._ttl = ttl
        self._metadata: dict[str, tuple[float, ServerMetadata]] = {}
        self._keys: dict[str, tuple[float, KeySet]] = {}

    async def metadata(self, provider: ProviderConfig) -> ServerMetadata:
        """The provider's metadata (fetched on first use); ProviderError when unavailable."""
        if not provider.is_oidc:
            return static_metadata(provider)
        cached = self._metadata.get(provider.id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        document = await self._get_json(provider, provider.discovery_url or "")
        try:
            metadata = parse_discovery(provider, document)
        except ValueError as exc:
            log.warning("%s discovery document refused: %s", provider.id, exc)
            raise ProviderError(UNREACHABLE, code="provider_metadata") from None
        self._metadata[provider.id] = (time.monotonic(), metadata)
        return metadata

    async def key_set(self, provider: ProviderConfig, *, refresh: bool = False) -> KeySet:
        """The provider's signing keys (JWKS); `refresh` refetches them."""
        cached = self._keys.get(provider.id)
        if cached is not None:
            age = time.monotonic() - cached[0]
            # A refresh (a token with an unknown `kid`) refetches at most every KEY_REFRESH_GAP
            # seconds: tokens anyone can make up must not turn into a flood of fetches.
            if age < self._ttl and (not refresh or age < KEY_REFRESH_GAP):
                return cached[1]
        metadata = await self.metadata(provider)
        document = await self._get_json(provider, metadata.jwks_uri or "")
        try:
            keys = KeySet.import_key_set(document)
        except (JoseError, ValueError, TypeError, KeyError):
            log.warning("%s key set refused", provider.id)
            raise ProviderError(UNREACHABLE, code="provider_keys") from None
        self._keys[provider.id] = (time.monotonic(), keys)
        return keys

    async def _get_json(self, provider: ProviderConfig, url: str) -> Any:
        try:
            response = await self._http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            return response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            log.warning("%s: fetching %s failed (%s)", provider.id, urlsplit(url).path, type(exc).__name__)
            raise ProviderError(UNREACHABLE, code="provider_unreachable") from None


def _is_provider_url(value: str) -> bool:
    try:
        provider_url(value)
    except ValueError:
        return False
    return True
