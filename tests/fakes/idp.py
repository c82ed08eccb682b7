"""A small fake identity provider (Starlette on uvicorn, loopback only) for presets and negative tests.

It serves the endpoints and claim shapes of the real ones, under path prefixes ("realms"):

- `/{realm}/...`  OpenID Connect: discovery, authorize, token, jwks, userinfo, logout. The generic
  provider uses realm `oidc`, the Google preset `google`, Microsoft `ms/{tenant}/v2.0` (as
  `{base}/{tenant}/v2.0` under MICROSOFT_CLIENT_LOGIN_BASE_URL); tenant `common` announces the
  templated issuer `.../{tenantid}/v2.0` as Entra ID does.
- `/gh/login/oauth/...` and `/gh-api/user`, `/gh-api/user/emails`: GitHub's OAuth app endpoints.

It checks what a real provider checks (client credentials, redirect URI, single-use codes, PKCE
S256) and can misbehave on request (`tamper`) so that wardgate's refusals can be tested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.servers import free_port

CLIENT_ID = "fake-client"
CLIENT_SECRET = "fake-client-secret"
TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"


@dataclass
class Grant:
    """What an authorization request asked for, remembered under its code."""

    realm: str
    redirect_uri: str
    nonce: str | None
    challenge: str
    claims: dict[str, Any]


@dataclass
class FakeIdP:
    """The provider's state; tests set `claims` (the next user) and `tamper` (misbehaviours)."""

    base: str = ""
    claims: dict[str, Any] = field(default_factory=dict)
    emails: list[dict[str, Any]] = field(default_factory=list)  # GitHub's /user/emails
    tamper: set[str] = field(default_factory=set)
    token_lifetime: float = 3600
    refresh_lifetime: float = 3600  # the lifetime a refresh answers with
    codes: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh: dict[str, dict[str, Any]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    logouts: list[dict[str, str]] = field(default_factory=list)
    jwks_fetches: int = 0
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    other_key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))

    def reset(self) -> None:
        """Forget everything but the keys."""
        self.claims, self.emails, self.tamper = {}, [], set()
        self.codes.clear(), self.access.clear(), self.refresh.clear()
        self.token_requests.clear(), self.logouts.clear()
        self.jwks_fetches = 0
        self.token_lifetime = self.refresh_lifetime = 3600

    # --- OpenID Connect -------------------------------------------------------------------------

    def issuer(self, realm: str, *, announced: bool = False) -> str:
        """The realm's issuer; Microsoft's `common` tenant announces a template, tokens name the tenant."""
        if realm == "ms/common/v2.0":
            return f"{self.base}/ms/{{tenantid}}/v2.0" if announced else f"{self.base}/ms/{TENANT_ID}/v2.0"
        return f"{self.base}/{realm}"

    def discovery(self, request: Request) -> Response:
        realm = request.path_params["realm"]
        root = f"{self.base}/{realm}"
        wrong_issuer = "discovery_wrong_issuer" in self.tamper
        insecure = "discovery_insecure_endpoint" in self.tamper
        return JSONResponse(
            {
                "issuer": f"{self.base}/elsewhere" if wrong_issuer else self.issuer(realm, announced=True),
                "authorization_endpoint": f"{root}/authorize",
                "token_endpoint": "http://idp.example/token" if insecure else f"{root}/token",
                "userinfo_endpoint": f"{root}/userinfo",
                "jwks_uri": f"{root}/jwks",
                "end_session_endpoint": f"{root}/logout",
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": not realm.startswith("ms/"),
            }
        )

    def jwks(self, _request: Request) -> Response:
        self.jwks_fetches += 1
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    def authorize(self, request: Request) -> Response:
        q = request.query_params
        realm = request.path_params.get("realm", "gh")
        if q.get("client_id") != CLIENT_ID or q.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = Grant(
            realm, q["redirect_uri"], q.get("nonce"), q["code_challenge"], dict(self.claims)
        )
        params = {"code": code, "state": q.get("state", "")}
        if realm != "gh" and "no_iss_param" not in self.tamper:
            params["iss"] = "https://evil.example" if "wrong_iss_param" in self.tamper else self.issuer(realm)
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(params)}", status_code=302)

    async def token(self, request: Request) -> Response:
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        self.token_requests.append(form)
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") == "refresh_token":
            return self._refreshed(form)
        grant = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or grant.redirect_uri != form.get("redirect_uri") or digest != grant.challenge:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        # json.dumps, not JSONResponse: a test may set an infinite token_lifetime ("Infinity")
        return Response(json.dumps(self._tokens(grant)), media_type="application/json")

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            client, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        else:
            client, secret = form.get("client_id", ""), form.get("client_secret", "")
        return client == CLIENT_ID and secret == CLIENT_SECRET

    def _tokens(self, grant: Grant) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = grant.claims
        self.refresh[refresh] = {"realm": grant.realm, "claims": grant.claims}
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
        }
        if grant.realm == "gh":
            return {**body, "scope": "read:user" if "narrow_scope" in self.tamper else "user:email"}
        body["refresh_token"] = refresh
        body["id_token"] = self.id_token(grant)
        if grant.realm == "google":  # Google names the OpenID scopes by their API URLs
            body["scope"] = "openid https://www.googleapis.com/auth/userinfo.email" + (
                "" if "narrow_scope" in self.tamper else " https://www.googleapis.com/auth/userinfo.profile"
            )
        elif "narrow_scope" in self.tamper:
            body["scope"] = "openid"
        return body

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer(grant.realm),
            "sub": grant.claims.get("sub", "someone"),
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": grant.nonce,
            **{k: v for k, v in grant.claims.items() if k != "sub"},
        }
        if grant.realm.startswith("ms/"):
            claims["tid"] = TENANT_ID
        if "google_short_issuer" in self.tamper:
            claims["iss"] = "accounts.google.com"
        tampering = {
            "wrong_nonce": {"nonce": "not-the-nonce"},
            "wrong_aud": {"aud": "someone-else"},
            "wrong_iss": {"iss": "https://evil.example"},
            "expired": {"exp": now - 3600, "iat": now - 7200},
            "no_nonce": {"nonce": None},
        }
        for name, change in tampering.items():
            if name in self.tamper:
                claims.update(change)
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self.other_key if "bad_signature" in self.tamper else self.key
        if "unknown_kid" in self.tamper:
            key = RSAKey.generate_key(2048, parameters={"kid": "k-unknown"})
        token = jwt.encode({"alg": "RS256", "kid": key.kid or "k1"}, claims, key)
        if "garbled" in self.tamper:
            token = token[:-10] + "AAAAAAAAAA"
        return token

    def _refreshed(self, form: dict[str, str]) -> Response:
        old = self.refresh.pop(form.get("refresh_token", ""), None)
        if old is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[access] = old["claims"]
        self.refresh[refresh] = old
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.refresh_lifetime,
            "refresh_token": refresh,
        }
        return Response(json.dumps(body), media_type="application/json")  # json.dumps: see `token`

    def userinfo(self, request: Request) -> Response:
        claims = self.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if claims is None:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        if "userinfo_other_sub" in self.tamper:
            return JSONResponse({**claims, "sub": "somebody-else"})
        return JSONResponse(claims)

    def logout(self, request: Request) -> Response:
        self.logouts.append(dict(request.query_params))
        return Response("signed out", media_type="text/plain")

    # --- GitHub ---------------------------------------------------------------------------------

    def github_user(self, request: Request) -> Response:
        claims = self.access.get(request.headers.get("authorization", "").removeprefix("Bearer "))
        if claims is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(claims)

    def github_emails(self, request: Request) -> Response:
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.access:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse(self.emails)

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(
            routes=[
                Route("/gh/login/oauth/authorize", self.authorize),
                Route("/gh/login/oauth/access_token", self.token, methods=["POST"]),
                Route("/gh-api/user", self.github_user),
                Route("/gh-api/user/emails", self.github_emails),
                Route("/{realm:path}/.well-known/openid-configuration", self.discovery),
                Route("/{realm:path}/authorize", self.authorize),
                Route("/{realm:path}/token", self.token, methods=["POST"]),
                Route("/{realm:path}/jwks", self.jwks),
                Route("/{realm:path}/userinfo", self.userinfo),
                Route("/{realm:path}/logout", self.logout),
            ]
        )


@contextmanager
def running_idp() -> Iterator[FakeIdP]:
    """Serve a FakeIdP on a free loopback port for the duration of the block."""
    port = free_port()
    idp = FakeIdP(base=f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(idp.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="fake-idp", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake identity provider did not start")
        time.sleep(0.02)
    try:
        yield idp
    finally:
        server.should_exit = True
        thread.join(timeout=10)
