"""`Site`: what the web layer needs to know about the deployment, as one frozen object.

Built once from the settings when the application is assembled (`application.build_application`);
routes, pages and cookies read this instead of reaching into the settings per request.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from wardgate.config.fields import SameSite
from wardgate.config.forward_auth import ForwardAuth
from wardgate.config.loading import redacted_settings
from wardgate.config.review import production_findings
from wardgate.config.settings import Settings


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """Attributes of the `token` cookie (HttpOnly and `Path=/` always)."""

    same_site: SameSite
    secure: bool | None  # None: Secure when the request is HTTPS
    domain: str | None = None  # SESSION_COOKIE_DOMAIN: shared by the subdomains (forward auth)

    def is_secure(self, scheme: str) -> bool:
        """The Secure flag for a request with this (client-facing) scheme."""
        return self.secure if self.secure is not None else scheme == "https"


@dataclass(frozen=True, slots=True)
class Site:
    """The deployment as the web layer sees it."""

    name: str  # WEBUI_NAME
    prefix: str  # WARDGATE_PATH_PREFIX: where wardgate's own pages and API live
    public_url: str | None  # WEBUI_URL
    origin: str | None  # its origin: the site's own for CSRF checks
    cookie: CookiePolicy
    state_cookie_secure: bool | None  # the pending-sign-on cookie (WEBUI_SESSION_COOKIE_SECURE)
    api_key_header: str  # CUSTOM_API_KEY_HEADER, lower-case
    api_keys_enabled: bool
    signup_open: bool
    password_auth: bool
    login_form: bool
    password_min_length: int
    signout_redirect_url: str | None  # WEBUI_AUTH_SIGNOUT_REDIRECT_URL
    has_app: bool  # an app upstream takes every path wardgate does not own
    sign_on_providers: tuple[tuple[str, str], ...]  # (id, name) of each single sign-on provider
    configuration: tuple[tuple[str, str], ...]  # the effective settings, secrets redacted (/admin)
    findings: tuple[str, ...]  # the production review (/admin)
    forward_auth: ForwardAuth | None = None  # FORWARD_AUTH_FILE: the sites guarded for a proxy
    app_signout_path: str = "/api/v1/auths/signout"  # UPSTREAM_SIGNOUT_PATH: the app's own sign-out

    @classmethod
    def from_settings(cls, s: Settings, *, has_app: bool, providers: dict[str, str]) -> Site:
        """The site for these settings."""
        return cls(
            name=s.webui_name,
            prefix=s.route_prefix,
            public_url=s.webui_url,
            origin=s.site_origin,
            cookie=CookiePolicy(s.auth_cookie_same_site, s.auth_cookie_secure, s.session_cookie_domain),
            state_cookie_secure=s.webui_session_cookie_secure,
            api_key_header=s.custom_api_key_header,
            api_keys_enabled=s.enable_api_keys,
            signup_open=s.signup_open,
            password_auth=s.enable_password_auth,
            login_form=s.enable_login_form,
            password_min_length=s.password_min_length,
            signout_redirect_url=s.webui_auth_signout_redirect_url,
            has_app=has_app,
            sign_on_providers=tuple(providers.items()),
            configuration=tuple(redacted_settings(s).items()),
            findings=tuple(production_findings(s)),
            forward_auth=s.forward_auth_file,
            app_signout_path=s.upstream_signout_path,
        )

    @property
    def sign_in_url(self) -> str | None:
        """The sign-in page's absolute address (WEBUI_URL), where protected sites send people."""
        return f"{self.public_url.rstrip('/')}{self.prefix}/auth" if self.public_url else None

    def at(self, path: str) -> str:
        """A path of wardgate's own pages and API (under the prefix)."""
        return self.prefix + path

    def public_base(self, conn: HTTPConnection) -> str:
        """`WEBUI_URL`, else the request's scheme and host as the trusted-proxy layer resolved them."""
        return self.public_url or f"{conn.url.scheme}://{conn.url.netloc}"
