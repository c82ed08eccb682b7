"""Single sign-on routes: `/oauth/{provider}/login` and its callback (Open WebUI's paths), and
`/oauth/{provider}/link`, the account page's "link this provider" button.

Sign-in and callback are GET navigations (the default CSP's `form-action 'self'` would stop a form
posting to a provider). Linking changes the account, so it is a POST from the account page, under the
CSRF middleware's origin check like every cookie-authenticated form; it answers with a page that
continues to the provider (a redirect would be part of the form submission, which `form-action`
covers). Every refusal ends as a redirect to `/auth?error=<code>` (the page shows the code's fixed
message: `wardgate.oauth.refusals`), never as a JSON error page or a stack trace; only an unknown
provider answers 404.

The pending sign-in travels in the `wardgate_oauth` cookie: HttpOnly, `SameSite=Lax` (it must come
back on the provider's top-level redirect to the callback), Secure on HTTPS, `Path=/oauth` (under
`WARDGATE_PATH_PREFIX`, like every wardgate route), ten minutes, sealed and single-use (see
`wardgate.oauth.state`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from wardgate.errors import ApiError, NotFoundError
from wardgate.gateway import Gateway
from wardgate.http.cookies import set_mfa_cookie, set_token_cookie
from wardgate.http.deps import ClientDep, GatewayDep, authenticate, cookie_values, site
from wardgate.http.forms import form_fields
from wardgate.http.rendering import render, return_target
from wardgate.http.schemas import ErrorBody
from wardgate.identity.authentication import Principal
from wardgate.oauth.linking import LinkRequest
from wardgate.oauth.state import STATE_LIFETIME
from wardgate.security.tokens import Claims

if TYPE_CHECKING:  # loaded with the first configured provider (`gateway.sign_on`)
    from wardgate.oauth.service import SignOn

STATE_COOKIE = "wardgate_oauth"
# Every answer is a redirect (to the provider, back into the site, or to /auth?error=<code>),
# except for a provider this site does not offer.
_ANSWERS: dict[int | str, dict[str, Any]] = {
    302: {"description": "To the provider, into the site, or to /auth?error=<code> on a refusal"},
    404: {"model": ErrorBody, "description": "Unknown or disabled sign-in provider"},
}
_PROVIDER = Path(max_length=64)
router = APIRouter(tags=["oauth"], responses=_ANSWERS, default_response_class=RedirectResponse)


def _sign_on(gw: Gateway) -> SignOn:
    if gw.sign_on is None:
        raise NotFoundError("Single sign-on is not configured on this site.", code="unknown_provider")
    return gw.sign_on


def _cookie_path(request: Request) -> str:
    return site(request).at("/oauth")


def _secure(request: Request) -> bool:
    configured = site(request).state_cookie_secure
    return configured if configured is not None else request.url.scheme == "https"


def _refusal(request: Request, code: str) -> Response:
    """302 to the sign-in page with the refusal's code (the page shows its fixed message); the
    pending sign-in is forgotten."""
    location = site(request).at(f"/auth?error={quote(code, safe='')}")
    response = RedirectResponse(location, status_code=302)
    response.delete_cookie(STATE_COOKIE, path=_cookie_path(request), secure=_secure(request), httponly=True)
    response.headers["Cache-Control"] = "no-store"
    return response


def _redirect_uri(request: Request, sign_on: SignOn, provider: str) -> str:
    """The callback URI this provider is told (its *_REDIRECT_URI variable, else derived)."""
    config = sign_on.provider(provider)  # 404 for an unknown provider
    callback = site(request).at(f"/oauth/{provider}/callback")
    return config.redirect_uri or f"{site(request).public_base(request)}{callback}"


def _set_state_cookie(request: Request, response: Response, sealed: str) -> None:
    response.set_cookie(
        STATE_COOKIE,
        sealed,
        max_age=STATE_LIFETIME,
        path=_cookie_path(request),
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    response.headers["Cache-Control"] = "no-store"


@router.get("/oauth/{provider}/login", status_code=302, summary="Sign in with a provider (redirects to it)")
async def oauth_login(
    request: Request,
    gw: GatewayDep,
    provider: str = _PROVIDER,
    redirect: str = Query("/", max_length=2048),
) -> Response:
    """Start the authorization-code flow; `redirect` is where to go afterwards (a path here, or a
    site that forward auth protects)."""
    sign_on = _sign_on(gw)
    redirect_uri = _redirect_uri(request, sign_on, provider)
    try:
        url, sealed = await sign_on.begin(provider, redirect_uri, return_target(request, redirect))
    except ApiError as exc:
        return _refusal(request, exc.code)
    response = RedirectResponse(url, status_code=302)
    _set_state_cookie(request, response, sealed)
    return response


async def start_link(request: Request, gw: Gateway, provider: str, principal: Principal) -> Response:
    """The account page's "link" button (`POST /oauth/{provider}/link`, in `pages`, once the person
    proved presence): start the flow bound, in the sealed state, to the signed-in person and this
    very session; the callback links the identity to their account only in the browser holding that
    session, and only while it is live. Answers with a page that continues to the provider.

    A linked provider is a new way in, whose own `amr` may count as a second factor: for an account
    with a factor it is a factor change, and needs a recent one (403 `step_up_required`)."""
    if principal.user.mfa:
        await anyio.to_thread.run_sync(gw.mfa.require_step_up, principal.user, principal.claims)
    sign_on = _sign_on(gw)
    name = sign_on.provider(provider).name  # 404 for an unknown provider
    link = LinkRequest(principal.user.id, principal.claims.session_id)
    redirect_uri = _redirect_uri(request, sign_on, provider)
    try:
        url, sealed = await sign_on.begin(provider, redirect_uri, site(request).at("/account"), link=link)
    except ApiError as exc:
        return _refusal(request, exc.code)
    response = render(request, "sign_on_link.html", principal=principal, provider_url=url, provider_name=name)
    _set_state_cookie(request, response, sealed)
    return response


async def _own_session(request: Request) -> str | None:
    """The session this browser itself holds (its cookie or header), if any is valid."""
    try:
        return (await authenticate(request)).claims.session_id
    except ApiError:
        return None


async def _callback(provider: str, request: Request, gw: Gateway, client: ClientDep) -> Response:
    sign_on = _sign_on(gw)
    sign_on.provider(provider)  # 404 for an unknown provider
    params = dict(request.query_params)
    if len(cookie_values(request, STATE_COOKIE)) > 1:
        # A second state cookie, set from a sibling site: it could finish the attacker's own sign-in
        # in this browser (login CSRF), as the one Starlette keeps is the later one (found by review).
        return _refusal(request, "oauth_state_mismatch")
    try:
        done = await sign_on.complete(
            provider, request.cookies.get(STATE_COOKIE), params, client, presenter=await _own_session(request)
        )
    except ApiError as exc:
        return _refusal(request, exc.code)
    target = return_target(request, done.next_path)  # a path here, or a site FORWARD_AUTH_FILE lists
    if done.mfa is not None:  # the account's own second factor, on the sign-in page
        response = RedirectResponse(site(request).at(f"/auth?redirect={quote(target, safe='/')}"), 302)
        response.delete_cookie(
            STATE_COOKIE, path=_cookie_path(request), secure=_secure(request), httponly=True
        )
        set_mfa_cookie(response, request, done.mfa.token)
        response.headers["Cache-Control"] = "no-store"
        return response
    if done.linked:  # back to the account page, saying what happened
        target += "?notice=linked-signed-out" if done.sessions_ended else "?notice=linked"
    response = RedirectResponse(target, status_code=302)
    response.delete_cookie(STATE_COOKIE, path=_cookie_path(request), secure=_secure(request), httponly=True)
    if done.signed is not None:
        set_token_cookie(response, request, done.signed.token)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get(
    "/oauth/{provider}/callback", status_code=302, summary="The provider's redirect back (register this URI)"
)
async def oauth_callback(
    request: Request, gw: GatewayDep, client: ClientDep, provider: str = _PROVIDER
) -> Response:
    """Finish the sign-in: verify, link the account, set the session cookie, go to `redirect`."""
    return await _callback(provider, request, gw, client)


@router.get("/oauth/{provider}/login/callback", status_code=302, summary="Open WebUI's other callback path")
async def oauth_login_callback(
    request: Request, gw: GatewayDep, client: ClientDep, provider: str = _PROVIDER
) -> Response:
    """Same as `/oauth/{provider}/callback`."""
    return await _callback(provider, request, gw, client)


async def signout_redirect_url(request: Request, gw: Gateway, claims: Claims | None) -> str | None:
    """Where the browser goes after sign-out: the provider's end-session URL for an SSO session,
    else `WEBUI_AUTH_SIGNOUT_REDIRECT_URL` (None when unset)."""
    where = site(request)
    configured = where.signout_redirect_url
    if claims is None or gw.sign_on is None:
        return configured
    post_logout = configured or f"{where.public_base(request)}{where.at('/auth')}"
    provider_url = await gw.sign_on.end_session_url(claims.session_id, post_logout)
    return provider_url or configured


@router.post(
    "/oauth/{provider}/backchannel-logout",
    status_code=200,
    summary="OpenID Connect Back-Channel Logout (register this URI at the provider)",
    response_class=Response,
)
async def backchannel_logout(request: Request, gw: GatewayDep, provider: str = _PROVIDER) -> Response:
    """The provider's server posts `logout_token` (form-encoded) when a person's session there ends;
    every wardgate session it began ends, everywhere. 200 when accepted, 400 when refused."""
    token = (await form_fields(request)).get("logout_token", "")
    await _sign_on(gw).backchannel_logout(provider, token)
    return Response(status_code=200, headers={"Cache-Control": "no-store"})
