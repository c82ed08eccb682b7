"""The authorization-code flow (RFC 6749 §4.1) with PKCE (RFC 7636) and OpenID Connect, via Authlib.

- The authorization request always carries `state` and an S256 code challenge (RFC 9700 §2.1.1
  recommends PKCE for every client), and for OpenID Connect a `nonce` (OIDC Core §3.1.2.1).
- The callback's `iss` parameter, when present, must name the provider (RFC 9207, mix-up defence).
- The code is exchanged with the verifier and the same redirect URI (RFC 6749 §4.1.3); the granted
  scope, when the provider names it, is compared with the requested one (RFC 6749 §5.1), and
  `linking` refuses a narrowed grant.
- The ID token is verified completely (OIDC Core §3.1.3.7): signature with the provider's JWKS and an
  asymmetric algorithm it announces, `iss`, `aud` (and `azp`), `exp`, `iat`, `nonce`, `at_hash`.
- UserInfo must describe the same `sub` (OIDC Core §5.3.2); GitHub has no ID token, so its identity is
  its numeric user id and the verified primary address from `/user/emails`.

Every failure becomes a `ProviderError` with a message fit for the user; the detail is logged
without tokens.
"""

from __future__ import annotations

import hmac
import logging
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from wardgate.errors import ProviderError
from wardgate.oauth.claims import claim_at, is_true
from wardgate.oauth.linking import LinkRequest, ProviderIdentity
from wardgate.oauth.metadata import ProviderDirectory, ServerMetadata
from wardgate.oauth.presets import ProviderConfig
from wardgate.oauth.refusals import CODE_REFUSED, ISSUER_MISMATCH, NO_SUBJECT, TOKEN_INVALID
from wardgate.oauth.state import LoginState

log = logging.getLogger(__name__)
PROVIDER_DENIED = "The sign-in provider did not complete the sign-in ({error})."
LEEWAY = 60  # seconds of clock skew accepted on exp / iat
MAX_ADDRESS_CLAIM = 320  # the width of the stored address column
# Scopes whose absence from the grant takes no claim away: `offline_access` asks for a refresh token
# (OIDC Core §11), which providers grant only on conditions of their own and seldom echo.
_NOT_ECHOED = frozenset({"offline_access"})


def new_login(
    provider: ProviderConfig, redirect_uri: str, next_path: str, link: LinkRequest | None = None
) -> LoginState:
    """Fresh random `state`, PKCE verifier (RFC 7636 §4.1: 43-128 chars) and, for OIDC, `nonce`;
    bound to the person and session that asked, for a link from the account page."""
    return LoginState(
        id=uuid.uuid4().hex,
        provider=provider.id,
        state=generate_token(32),
        nonce=generate_token(32) if provider.is_oidc else None,
        code_verifier=generate_token(64),
        redirect_uri=redirect_uri,
        next_path=next_path,
        issued_at=int(time.time()),
        link_user=link.user_id if link else None,
        link_session=link.session_id if link else None,
    )


def link_request(login: LoginState) -> LinkRequest | None:
    """The account-page link this pending sign-in carries, if it is one."""
    if login.link_user is None or login.link_session is None:
        return None
    return LinkRequest(login.link_user, login.link_session)


def authorization_url(provider: ProviderConfig, metadata: ServerMetadata, login: LoginState) -> str:
    """The provider's authorization URL for this login (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
    extra: dict[str, str] = {"code_challenge_method": "S256"}
    if login.nonce is not None:
        extra["nonce"] = login.nonce
    url: str = prepare_grant_uri(
        metadata.authorization_endpoint,
        client_id=provider.client_id,
        response_type="code",
        redirect_uri=login.redirect_uri,
        scope=provider.scope,
        state=login.state,
        code_challenge=create_s256_code_challenge(login.code_verifier),
        **extra,
    )
    return url


def check_callback(metadata: ServerMetadata, params: Mapping[str, str]) -> str:
    """The authorization code from the callback's parameters, or ProviderError."""
    if "error" in params:
        error = "".join(c for c in params["error"][:64] if c.isalnum() or c in "_-.") or "error"
        raise ProviderError(PROVIDER_DENIED.format(error=error), code="provider_denied")
    returned_iss = params.get("iss")
    expected = metadata.issuer if metadata.issuer and "{" not in metadata.issuer else None
    if expected and returned_iss is None and metadata.iss_parameter:
        raise ProviderError(ISSUER_MISMATCH, code="provider_issuer")  # RFC 9207 §2.4: required
    if (
        returned_iss is not None
        and expected
        and not hmac.compare_digest(returned_iss.encode(), expected.encode())
    ):
        raise ProviderError(ISSUER_MISMATCH, code="provider_issuer")  # RFC 9207 §2.4
    code = params.get("code")
    if not code:
        raise ProviderError(CODE_REFUSED, code="provider_no_code")
    return code


def _auth_method(provider: ProviderConfig, metadata: ServerMetadata) -> str:
    if provider.token_endpoint_auth_method:
        return provider.token_endpoint_auth_method
    supported = metadata.token_auth_methods
    return (
        "client_secret_post"
        if "client_secret_basic" not in supported and "client_secret_post" in supported
        else "client_secret_basic"
    )


def oauth_client(
    provider: ProviderConfig, metadata: ServerMetadata, tls: ssl.SSLContext, timeout: float
) -> AsyncOAuth2Client:
    """Authlib's client for the token endpoint, authenticating as this provider's client."""
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        token_endpoint_auth_method=_auth_method(provider, metadata),
        code_challenge_method="S256",
        verify=tls,
        timeout=timeout,
        follow_redirects=False,
    )


async def exchange_code(
    client: AsyncOAuth2Client, metadata: ServerMetadata, login: LoginState, code: str
) -> dict[str, Any]:
    """Trade the code for tokens (RFC 6749 §4.1.3) with the PKCE verifier (RFC 7636 §4.5)."""
    try:
        token = await client.fetch_token(
            metadata.token_endpoint,
            grant_type="authorization_code",
            code=code,
            redirect_uri=login.redirect_uri,
            code_verifier=login.code_verifier,
        )
    except OAuthError as exc:
        log.warning("%s refused the code exchange: %s", login.provider, exc.error)
        raise ProviderError(CODE_REFUSED, code="provider_code_refused") from None
    except (httpx2.HTTPError, ValueError, OverflowError) as exc:  # OverflowError: Authlib's int(1e999)
        log.warning("%s token endpoint failed (%s)", login.provider, type(exc).__name__)
        raise ProviderError(CODE_REFUSED, code="provider_code_refused") from None
    if not isinstance(token.get("access_token"), str):
        raise ProviderError(TOKEN_INVALID, code="provider_token")
    return dict(token)


def missing_scopes(provider: ProviderConfig, token: Mapping[str, Any]) -> frozenset[str]:
    """The requested scopes the token response says were not granted (empty: all were).

    A person can edit the authorization URL to leave out, say, `groups`, and a provider that
    releases groups only on request then simply stops sending them (OpenID Connect Core §5.4). RFC
    6749 §5.1 has the token response name the granted scope when it differs from the request; when
    it is absent the provider granted what it saw requested, which may be an edited request, so the
    claim rules of `wardgate.oauth.linking` refuse a missing groups claim as well.
    """
    # A verified ID token is the proof that `openid` was granted (OIDC Core §3.1.3.7).
    requested = frozenset(provider.scope.split()) - _NOT_ECHOED - ({"openid"} if provider.is_oidc else set())
    granted = token.get("scope")
    if granted is None or not provider.grant_names_scopes:
        return frozenset()
    if granted == "" and provider.id == "github":  # a GitHub App: its permissions are the app's, not scopes
        return frozenset()
    if isinstance(granted, list):  # some providers send a JSON array
        granted = " ".join(str(item) for item in granted)
    if not isinstance(granted, str):
        return requested
    have: set[str] = set()
    for name in re.split(r"[\s,]+", granted):  # GitHub separates with commas
        have.add(name)
        have.update(provider.scope_aliases.get(name, ()))
    missing = requested - have
    if missing:
        log.warning("%s granted less than requested: %s missing", provider.id, " ".join(sorted(missing)))
    return frozenset(missing)


async def verify_id_token(
    directory: ProviderDirectory,
    provider: ProviderConfig,
    metadata: ServerMetadata,
    token: Mapping[str, Any],
    nonce: str | None,
) -> tuple[str, dict[str, Any]]:
    """The verified ID token claims and the identity issuer (OIDC Core §3.1.3.7)."""
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise ProviderError(TOKEN_INVALID, code="provider_no_id_token")
    try:
        try:
            decoded = jwt.decode(
                id_token, await directory.key_set(provider), algorithms=metadata.signing_algs
            )
        except InvalidKeyIdError:  # the provider rotated its keys since we fetched them
            keys: KeySet = await directory.key_set(provider, refresh=True)
            decoded = jwt.decode(id_token, keys, algorithms=metadata.signing_algs)
        claims = dict(decoded.claims)
        issuer = (metadata.issuer or "").replace(
            "{tenantid}", str(claims.get("tid", ""))
        )  # Microsoft "common"
        options: dict[str, Any] = {
            "iss": {"essential": True, "values": [issuer, *provider.extra_issuers]},
            "aud": {"essential": True, "value": provider.client_id},
        }
        params = {"nonce": nonce, "client_id": provider.client_id, "access_token": token.get("access_token")}
        CodeIDToken(claims, decoded.header, options, params).validate(leeway=LEEWAY)
    except (JoseError, ValueError, TypeError) as exc:
        log.warning("%s ID token refused: %s", provider.id, type(exc).__name__)
        raise ProviderError(TOKEN_INVALID, code="provider_id_token") from None
    return issuer, claims


async def fetch_json(client: AsyncOAuth2Client, url: str, provider: str) -> Any:
    """GET a JSON resource with the access token (RFC 6750 §2.1)."""
    try:
        # The token was issued a moment ago: send it as is, without Authlib's refresh-if-near-expiry.
        bearer = {"Authorization": f"Bearer {client.token['access_token']}", "Accept": "application/json"}
        response = await client.request("GET", url, headers=bearer, withhold_token=True)
        response.raise_for_status()
        return response.json()
    except (OAuthError, httpx2.HTTPError, ValueError) as exc:
        log.warning("%s: %s failed (%s)", provider, url.rsplit("/", 1)[-1], type(exc).__name__)
        raise ProviderError(TOKEN_INVALID, code="provider_userinfo") from None


def oidc_identity(
    provider: ProviderConfig, issuer: str, id_claims: Mapping[str, Any], userinfo: Any
) -> ProviderIdentity:
    """Identity from ID token claims plus UserInfo (which must be about the same `sub`)."""
    claims = dict(id_claims)
    if isinstance(userinfo, dict):
        if str(userinfo.get("sub")) != str(id_claims.get("sub")):
            raise ProviderError(TOKEN_INVALID, code="provider_userinfo_sub")  # OIDC Core §5.3.2
        # How the person authenticated (`amr`, `acr`) and the provider's session (`sid`) are the ID
        # token's word alone (OIDC Core §2, Back-Channel Logout §2.1).
        claims.update(
            {k: v for k, v in userinfo.items() if k not in ("iss", "aud", "sub", "amr", "acr", "sid")}
        )
    subject = claim_at(claims, provider.sub_claim)
    if subject in (None, ""):
        raise ProviderError(NO_SUBJECT, code="provider_no_subject")
    email = claim_at(claims, provider.email_claim)
    # `email_verified` speaks about the `email` claim only (OIDC Core §5.1). Microsoft Entra states
    # domain ownership with the optional `xms_edov` claim instead; any other provider may let its
    # users add claims of that name, so only the preset that defines it is believed.
    vouching = provider.domain_verified_claim
    verified = provider.email_claim == "email" and (
        is_true(claims.get("email_verified")) or (vouching is not None and is_true(claims.get(vouching)))
    )
    name = claim_at(claims, provider.name_claim)
    return ProviderIdentity(
        provider=provider.id,
        issuer=issuer,
        subject=str(subject)[:255],
        email=_address_claim(email),
        email_verified=verified,
        name=name if isinstance(name, str) else None,
        claims=claims,
    )


async def github_identity(provider: ProviderConfig, client: AsyncOAuth2Client) -> ProviderIdentity:
    """GitHub: `/user` for the id and name; `/user/emails` for the verified primary address."""
    user = await fetch_json(client, provider.userinfo_url or "", provider.id)
    if not isinstance(user, dict):
        raise ProviderError(TOKEN_INVALID, code="provider_userinfo")
    try:  # without the user:email scope there is no list: the public address, unverified, remains
        emails = await fetch_json(client, provider.emails_url, provider.id) if provider.emails_url else []
    except ProviderError:
        emails = []
    primary = (
        next((e for e in emails if isinstance(e, dict) and e.get("primary")), None)
        if isinstance(emails, list)
        else None
    )
    email = primary.get("email") if primary else user.get("email")
    verified = bool(primary and primary.get("verified") is True)
    claims = {**user, "email": email, "email_verified": verified}
    subject = claim_at(claims, provider.sub_claim)
    if subject in (None, ""):
        raise ProviderError(NO_SUBJECT, code="provider_no_subject")
    name = user.get("name") or user.get("login")
    return ProviderIdentity(
        provider=provider.id,
        issuer=provider.issuer or provider.id,
        subject=str(subject)[:255],
        email=_address_claim(email),
        email_verified=verified,
        name=name if isinstance(name, str) else None,
        claims=claims,
    )


def _address_claim(value: Any) -> str | None:
    """The address as the provider sent it, trimmed: never case-folded here, for `str.lower()` maps
    some non-ASCII letters to ASCII ones (`wardgate.oauth.claims.exact_address` decides matching)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_ADDRESS_CLAIM]
