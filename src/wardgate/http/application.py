"""The ASGI application: FastAPI routes wrapped in wardgate's middleware, in one explicit order.

Outside in (docs/architecture.md follows one request through it):

1. TrustedProxyMiddleware   client IP, scheme and host from FORWARDED_ALLOW_IPS peers only
   TracingMiddleware        (with ENABLE_OTEL_TRACES) a server span around the request
   RequestMetricsMiddleware (with METRICS_TOKEN or METRICS_ALLOW_IPS) route class, status, duration
   UpgradeAsRequestMiddleware (with FORWARD_AUTH_FILE) a proxy's forward-auth question that came
                            as a WebSocket handshake, answered as the GET it is
2. AuditContextMiddleware   tells the audit log where the request comes from
3. SecurityHeadersMiddleware precomputed headers on every response, errors included
4. HeaderSizeLimitMiddleware 431 beyond MAX_HEADER_SIZE or 100 header fields
5. CORSGuardMiddleware      exact-origin allow-list (Starlette's CORS inside)
6. CSRFMiddleware           Origin/Referer check for cookie-authenticated unsafe requests
7. BodySizeLimitMiddleware  413 beyond MAX_BODY_SIZE (inside CORS, so listed origins can read it)
8. FastAPI                  error handlers, authentication dependencies, routes
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType

import anyio
import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import FileResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from wardgate import __version__
from wardgate.config.settings import Settings
from wardgate.gateway import Gateway
from wardgate.http.error_pages import install_error_pages
from wardgate.http.errors import install_error_handlers
from wardgate.http.hot_routes import HotRoutes
from wardgate.http.middleware.audit_context import AuditContextMiddleware
from wardgate.http.middleware.cors import CORSGuardMiddleware
from wardgate.http.middleware.csrf import CSRFMiddleware
from wardgate.http.middleware.request_metrics import RequestMetricsMiddleware, RouteClasses
from wardgate.http.middleware.security_headers import SecurityHeadersMiddleware
from wardgate.http.middleware.size_limits import BodySizeLimitMiddleware, HeaderSizeLimitMiddleware
from wardgate.http.middleware.tracing import TracingMiddleware
from wardgate.http.middleware.trusted_proxy import TrustedProxyMiddleware
from wardgate.http.middleware.upgrade_as_request import UpgradeAsRequestMiddleware
from wardgate.http.relay import dispatch
from wardgate.http.relay.dispatch import UpstreamDispatch
from wardgate.http.relay.models import LARGE_PARSES
from wardgate.http.relay.streaming import ReverseProxy
from wardgate.http.rendering import STATIC
from wardgate.http.routes import (
    admin_pages,
    api_keys,
    audit,
    auth,
    authz,
    metrics,
    mfa,
    mfa_pages,
    oauth,
    pages,
    password_reset,
    public,
    usage,
    usage_pages,
    users,
)
from wardgate.http.routes.metrics import MetricsAccess
from wardgate.http.site import Site
from wardgate.http.static_files import StaticAssets
from wardgate.identity.authentication import TOKEN_COOKIE
from wardgate.identity.password_reset import password_resets_from_settings
from wardgate.observability.tracing import TraceExport, Tracing
from wardgate.proxy.acting import forwarded_user_from_settings
from wardgate.proxy.client import UpstreamClient
from wardgate.proxy.identity import ForwardingRules, IdentityHeaders
from wardgate.security.headers import build_header_policy

__all__ = ["ASGIApp", "build_application"]

# Sign-in and sign-up forms are checked for a foreign Origin even without a cookie (login CSRF).
# Routes that start a session without needing one: checked for login CSRF even without a cookie.
LOGIN_PATHS = (
    "/api/v1/auths/signin",
    "/api/v1/auths/signup",
    "/api/v1/auths/ldap",
    "/api/v1/auths/mfa/verify",
    "/api/v1/auths/mfa/passkeys/signin/finish",
    "/auth/signin",
    "/auth/signup",
    "/auth/mfa",
    "/auth/ldap",
    "/auth/forgot",
    "/auth/reset",
)


def build_routes(gateway: Gateway, *, tracing: Tracing | None = None) -> FastAPI:
    """The FastAPI application with every route and error handler, without the outer middleware."""

    s = gateway.settings
    providers = gateway.sign_on.display_names() if gateway.sign_on else {}
    site = Site.from_settings(s, has_app=gateway.upstreams.has_app, providers=providers)
    token = s.metrics_token.get_secret_value().encode() if s.metrics_token else None
    metrics_access = MetricsAccess(token, s.metrics_allow_ips)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        client = UpstreamClient(read_timeout=s.upstream_timeout)
        identity = IdentityHeaders(
            s.webui_auth_trusted_email_header,
            s.webui_auth_trusted_name_header,
            s.webui_auth_trusted_groups_header,
            s.webui_auth_trusted_role_header,
        )
        forwarded = forwarded_user_from_settings(s)  # service keys acting for Open WebUI's people
        rules = ForwardingRules(identity, site.api_key_header, s.forward_underscore_headers, forwarded)
        app.state.proxy = ReverseProxy(
            client, rules, gateway.authenticator.is_ours, tracing=tracing, measured=gateway.measured
        )
        app.state.large_parses = anyio.CapacityLimiter(LARGE_PARSES)  # model requests' large bodies
        try:
            yield
        finally:
            await client.aclose()
            await gateway.stop()
            if tracing is not None:
                await anyio.to_thread.run_sync(tracing.shutdown)  # exports what is pending

    app = FastAPI(
        title="wardgate",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Security gateway for self-hosted AI deployments (Open WebUI-compatible auth API).",
        # FastAPI's own OpenTelemetry hooks stay off: traces are TracingMiddleware's (ENABLE_OTEL),
        # and the check whether they are on costs 3-5 µs a request (bench/layers.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.gateway = gateway
    app.state.site = site
    app.state.metrics_access = metrics_access
    install_error_handlers(app)
    install_error_pages(app)  # browsers get pages; API clients keep the JSON
    app.state.password_resets = password_resets_from_settings(
        s, gateway.accounts, gateway.sessions, gateway.limiter, gateway.audit
    )  # None without SMTP_HOST: no "Forgot password?"
    prefix = site.prefix  # WARDGATE_PATH_PREFIX: keeps wardgate's routes clear of the app's
    owned = [app.openapi_url] if app.openapi_url else []  # path templates UpstreamDispatch leaves to FastAPI
    # The most requested first: the router tries each route in turn, 1.7 µs each (bench/layers.py):
    # /health, the session check and the forward-auth decisions must not wait behind the pages.
    routers: list[ModuleType] = [public, auth, authz, mfa, api_keys, users, audit, usage, oauth, pages]
    routers += [admin_pages, mfa_pages, usage_pages, password_reset]
    if gateway.measured:  # otherwise the path is not wardgate's
        routers.append(metrics)
    for module in routers:
        app.include_router(module.router, prefix=prefix)
        owned += [prefix + route.path for route in module.router.routes if isinstance(route, Route)]
    assets = StaticAssets(STATIC)  # fingerprinted names, immutable, gzip (rendering links them)
    app.state.static_assets = assets
    app.mount(f"{prefix}/static", assets, name="static")
    owned += [f"{prefix}/static/{{path:path}}", f"{prefix}/robots.txt"]
    app.state.owned_paths = tuple(owned)

    @app.get(f"{prefix}/robots.txt", include_in_schema=False)
    async def robots() -> FileResponse:
        return FileResponse(STATIC / "robots.txt", media_type="text/plain")

    app.include_router(dispatch.router)  # last: WebSocket upgrades for every path not matched above

    return app


def build_application(gateway: Gateway) -> ASGIApp:
    """Wrap the routes in the middleware stack, innermost first."""
    s = gateway.settings
    tracing = Tracing.start(trace_export(s)) if s.enable_otel and s.enable_otel_traces else None
    routes = build_routes(gateway, tracing=tracing)
    app: ASGIApp = UpstreamDispatch(routes)  # HTTP to upstreams bypasses FastAPI's router
    prefix = s.route_prefix
    hot = {  # called all the time: answered without FastAPI's router and dependency solving
        f"{prefix}/api/v1/auths/": auth.get_session_user,
        f"{prefix}/api/v1/authz/forward-auth": authz.forward_auth,
        f"{prefix}/api/v1/authz/auth-request": authz.auth_request,
    }
    app = HotRoutes(app, routes, hot)
    app = BodySizeLimitMiddleware(app, s.max_body_size)
    app = CSRFMiddleware(
        app,
        site_origin=s.site_origin,
        trusted_origins=s.cors_allow_origin,
        cookie_name=TOKEN_COOKIE,
        login_paths=[f"{s.route_prefix}{path}" for path in LOGIN_PATHS],
        api_key_header=s.custom_api_key_header,  # the header deps.py reads API keys from
    )
    app = CORSGuardMiddleware(app, s.cors_allow_origin)
    app = HeaderSizeLimitMiddleware(app, s.max_header_size)
    policy = build_header_policy(s.security_headers)
    app = SecurityHeadersMiddleware(app, policy, enforce_on_proxied=s.proxy_enforce_security_headers)
    app = AuditContextMiddleware(app)
    if s.forward_auth_file is not None:  # a proxy's question about a WebSocket, answered as a request
        decisions = [f"{s.route_prefix}/api/v1/authz/{name}" for name in ("forward-auth", "auth-request")]
        app = UpgradeAsRequestMiddleware(app, decisions)
    classes = RouteClasses(s.route_prefix)
    if gateway.measured:  # nobody may read them: not measured
        app = RequestMetricsMiddleware(app, classes)
    if tracing is not None:
        app = TracingMiddleware(app, tracing, classes)
    return TrustedProxyMiddleware(app, s.forwarded_allow_ips)


def trace_export(s: Settings) -> TraceExport:
    """Where spans go, from Open WebUI's `OTEL_*` variables."""
    password = s.otel_basic_auth_password
    return TraceExport(
        endpoint=str(s.otel_exporter_otlp_endpoint),
        insecure=s.otel_exporter_otlp_insecure,
        protocol=s.otel_otlp_span_exporter,
        service_name=s.otel_service_name,
        sampler=s.otel_traces_sampler,
        sampler_arg=s.otel_traces_sampler_arg,
        username=s.otel_basic_auth_username,
        password=password.get_secret_value() if password else None,
    )
