"""Single sign-on's rules across variables: no half-configured provider.

Each variable's own form (URLs, scopes, claims, keys, lists) is checked by its field in `settings`;
what is left here needs several of them at once. Called from `loading.cross_field_problems`.
"""

from __future__ import annotations

from wardgate.config.settings import Settings

# (provider, client id variable, client secret variable)
_SIGN_ON_PAIRS = (
    ("Google", "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"),
    ("Microsoft", "MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET"),
    ("GitHub", "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"),
)


def sign_on_problems(s: Settings) -> list[str]:
    """Every half-configured provider."""
    problems: list[str] = []
    pairs = (
        (s.google_client_id, s.google_client_secret),
        (s.microsoft_client_id, s.microsoft_client_secret),
        (s.github_client_id, s.github_client_secret),
    )
    for (label, id_name, secret_name), (client_id, secret) in zip(_SIGN_ON_PAIRS, pairs, strict=True):
        if bool(client_id) != bool(secret):
            problems.append(f"{id_name} / {secret_name}: set both to enable {label} sign-in, or neither")
    if s.microsoft_client_id and not s.microsoft_client_tenant_id:
        problems.append("MICROSOFT_CLIENT_TENANT_ID: required for Microsoft sign-in (a tenant id, or common)")
    public = s.oauth_code_challenge_method is not None and not s.oauth_client_secret
    if s.oauth_client_id and not (s.oauth_client_secret or public):
        problems.append(
            "OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET: set both (or OAUTH_CODE_CHALLENGE_METHOD=S256 for a "
            "public client) to enable OpenID Connect sign-in"
        )
    if bool(s.oauth_client_id) != bool(s.openid_provider_url):
        problems.append("OAUTH_CLIENT_ID / OPENID_PROVIDER_URL: set both to enable OpenID Connect sign-in")
    if s.oauth_client_secret and not s.oauth_client_id:
        problems.append("OAUTH_CLIENT_SECRET: set without OAUTH_CLIENT_ID")
    return problems
