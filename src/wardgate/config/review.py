"""`wardgate check --production`: a local security review of the configuration.

Each finding names the variable, why it matters and the fix. They are warnings at start-up and
errors under `check --production`; invalid values never get this far (they stop start-up).
"""

from __future__ import annotations

from wardgate.config.settings import Settings
from wardgate.config.values import Role

MIN_SECRET_BYTES = 32


def production_findings(settings: Settings) -> list[str]:
    """Every production concern with these settings (empty when none)."""
    s = settings
    findings: list[str] = []

    def add(variable: str, why: str, fix: str) -> None:
        findings.append(f"{variable}: {why} Fix: {fix}")

    if s.webui_secret_key is None or s.secret_key_source == "file":  # noqa: S105
        add(
            "WEBUI_SECRET_KEY",
            "not set; a generated key in DATA_DIR is used, so it is lost with that "
            "directory and differs between instances.",
            "set it to the output of `wardgate gen-secret`.",
        )
    elif len(s.secret_key.encode()) < MIN_SECRET_BYTES:
        add(
            "WEBUI_SECRET_KEY",
            f"shorter than {MIN_SECRET_BYTES} bytes; an HS256 key this short can be "
            "brute-forced from one token (RFC 7518 §3.2).",
            "use `wardgate gen-secret`.",
        )
    fallbacks = enumerate(s.webui_secret_key_fallbacks, 1)
    short = [n for n, key in fallbacks if len(key.get_secret_value().encode()) < MIN_SECRET_BYTES]
    if short:
        add(
            "WEBUI_SECRET_KEY_FALLBACKS",
            f"fallback #{', #'.join(map(str, short))} shorter than {MIN_SECRET_BYTES} bytes; a fallback "
            "still verifies tokens, so one brute-forced from a token signed with it forges sessions.",
            "finish the rotation and remove it (`wardgate check --keys` shows what it still holds).",
        )
    if s.auth_cookie_secure is not True:
        add(
            "WEBUI_SESSION_COOKIE_SECURE",
            "the session cookie is not forced Secure, so it can travel over plain HTTP.",
            "set WEBUI_SESSION_COOKIE_SECURE=true (and WEBUI_AUTH_COOKIE_SECURE) behind HTTPS.",
        )
    if s.cors_allow_origin == ("*",):
        add(
            "CORS_ALLOW_ORIGIN",
            "'*' lets any site read anonymous responses (never with credentials).",
            "list the exact origins that need access, separated by ';'.",
        )
    if s.jwt_expires_in is None:
        add(
            "JWT_EXPIRES_IN",
            "tokens never expire; a stolen token works until revoked.",
            "use e.g. 24h or 7d.",
        )
    hsts = s.security_headers.get("HSTS")
    if hsts == "" or (hsts is not None and hsts.lower().startswith("max-age=0")):
        add(
            "HSTS",
            "Strict-Transport-Security is off, so browsers can be downgraded to HTTP.",
            "unset HSTS (default max-age=31536000; includeSubDomains).",
        )
    if s.forwarded_allow_ips.trust_all:
        add(
            "FORWARDED_ALLOW_IPS",
            "'*' believes X-Forwarded-For/Proto from anyone: client IPs (rate limits, "
            "audit) and the scheme can be spoofed.",
            "list only your reverse proxy's addresses.",
        )
    if s.enable_ldap and not s.ldap_use_tls:
        add(
            "LDAP_USE_TLS",
            "directory sign-in sends every password to the LDAP server in the clear.",
            "set LDAP_USE_TLS=true (LDAPS, port 636) and LDAP_CA_CERT_FILE for a private CA.",
        )
    if s.enable_ldap and s.ldap_use_tls and not s.ldap_validate_cert:
        add(
            "LDAP_VALIDATE_CERT",
            "the directory's certificate is not checked: anyone on the path can pose as it and read "
            "every password.",
            "set LDAP_VALIDATE_CERT=true and LDAP_CA_CERT_FILE to the directory's CA.",
        )
    if Role.ADMIN not in s.mfa_required_roles:
        add(
            "MFA_REQUIRED_ROLES",
            "admins may sign in without a second factor, so one phished or reused password "
            "takes over the whole deployment.",
            "set MFA_REQUIRED_ROLES=admin (admins then enrol an authenticator app or a passkey "
            "at their next sign-in).",
        )
    if s.enable_signup and s.default_user_role in (Role.USER, Role.ADMIN):
        add(
            "ENABLE_SIGNUP/DEFAULT_USER_ROLE",
            f"anyone can sign up and is immediately '{s.default_user_role.value}'.",
            "set DEFAULT_USER_ROLE=pending (approve users) or ENABLE_SIGNUP=false.",
        )
    if s.oauth_merge_accounts_by_email and s.signup_open:
        add(
            "OAUTH_MERGE_ACCOUNTS_BY_EMAIL/ENABLE_SIGNUP",
            "merging single sign-on by email next to open sign-up: anyone can register a colleague's "
            "address (wardgate sends no email to prove it) before the colleague's first single "
            "sign-on. wardgate merges only onto addresses a provider has verified for that account, "
            "so such a merge is refused, but the squatted address stays the stranger's.",
            "set ENABLE_SIGNUP=false (or ENABLE_PASSWORD_AUTH=false) and let people link a provider "
            "from their account page, or OAUTH_MERGE_ACCOUNTS_BY_EMAIL=false.",
        )
    multitenant = (s.microsoft_client_tenant_id or "").lower() in ("common", "organizations")
    if (
        multitenant
        and s.microsoft_client_id
        and (s.enable_oauth_role_management or s.enable_oauth_group_management)
    ):
        add(
            "MICROSOFT_CLIENT_TENANT_ID/ENABLE_OAUTH_ROLE_MANAGEMENT",
            f"'{s.microsoft_client_tenant_id}' lets people of every Entra tenant sign in, and each "
            "tenant's own administrators assign this application's roles and name their groups: any "
            "tenant can make wardgate admins, or join the groups that open an upstream.",
            "set MICROSOFT_CLIENT_TENANT_ID to your tenant's ID or domain, or turn role and group "
            "management off.",
        )
    if not s.webui_url:
        add(
            "WEBUI_URL",
            "not set; the site origin for CSRF checks and redirects comes from the Host header.",
            "set it to the public URL, e.g. https://chat.example.com.",
        )
    elif s.webui_url.startswith("http://"):
        add("WEBUI_URL", "uses http://; sessions and passwords travel unencrypted.", "serve over https://.")
    if s.auth_cookie_same_site == "none":
        add(
            "WEBUI_AUTH_COOKIE_SAME_SITE",
            "SameSite=None sends the session cookie on cross-site requests.",
            "use lax or strict unless wardgate is embedded cross-site.",
        )
    everyone = s.metrics_allow_ips.trust_all or any(n.prefixlen == 0 for n in s.metrics_allow_ips.networks)
    if everyone or (s.metrics_allow_ips.networks and s.forwarded_allow_ips.trust_all):
        add(
            "METRICS_ALLOW_IPS",
            "anyone who can reach wardgate reads /metrics (every address is allowed, or "
            "FORWARDED_ALLOW_IPS=* lets any client name its own address).",
            "list the Prometheus servers' addresses only, or use METRICS_TOKEN.",
        )
    return findings


# How much each finding matters (the admin page sorts and labels them): "high" is a way in or a
# forged session for someone on the network or the internet; "medium" weakens a defence.
SEVERITY: dict[str, str] = {
    "WEBUI_SECRET_KEY": "high",
    "WEBUI_SECRET_KEY_FALLBACKS": "high",
    "FORWARDED_ALLOW_IPS": "high",
    "LDAP_USE_TLS": "high",
    "LDAP_VALIDATE_CERT": "high",
    "ENABLE_SIGNUP/DEFAULT_USER_ROLE": "high",
    "MICROSOFT_CLIENT_TENANT_ID/ENABLE_OAUTH_ROLE_MANAGEMENT": "high",
}


def severity_of(finding: str) -> str:
    """`high` or `medium`, for a finding of `production_findings`."""
    variable = finding.split(":", 1)[0]
    if variable == "WEBUI_URL" and "http://" in finding:
        return "high"
    return SEVERITY.get(variable, "medium")
