"""Single-sign-on configuration: Open WebUI's names, every problem reported at once, secrets redacted."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import SECRET
from wardgate.config import load_settings, redacted_settings
from wardgate.config.review import production_findings, severity_of
from wardgate.config.values import fernet_keys, json_or_comma_list
from wardgate.errors import ConfigError
from wardgate.oauth.presets import configured_providers, link_policy

CLIENT_SECRET = "a-client-secret-that-must-never-be-printed"


def problems(tmp_path: Path, **env: str) -> list[str]:
    """The problems load_settings reports for these variables."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, **env})
    assert CLIENT_SECRET not in str(caught.value)
    return caught.value.problems


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GOOGLE_CLIENT_ID": "id"}, "GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET: set both"),
        ({"GOOGLE_CLIENT_SECRET": CLIENT_SECRET}, "GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET: set both"),
        ({"GITHUB_CLIENT_ID": "id"}, "GITHUB_CLIENT_ID / GITHUB_CLIENT_SECRET: set both"),
        (
            {"MICROSOFT_CLIENT_ID": "id", "MICROSOFT_CLIENT_SECRET": CLIENT_SECRET},
            "MICROSOFT_CLIENT_TENANT_ID: required",
        ),
        (
            {"OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": CLIENT_SECRET},
            "OAUTH_CLIENT_ID / OPENID_PROVIDER_URL",
        ),
        (
            {
                "OAUTH_CLIENT_ID": "id",
                "OPENID_PROVIDER_URL": "https://idp.example/.well-known/openid-configuration",
            },
            "OAUTH_CLIENT_ID / OAUTH_CLIENT_SECRET: set both",
        ),
        ({"OPENID_PROVIDER_URL": "http://idp.example/.well-known/openid-configuration"}, "must use https"),
        (
            {"GITHUB_API_BASE_URL": "ftp://x"},
            "GITHUB_API_BASE_URL='ftp://x': expected an absolute https:// URL",
        ),
        ({"OAUTH_SCOPES": "email profile"}, "OAUTH_SCOPES='email profile': must include the openid scope"),
        ({"OAUTH_CODE_CHALLENGE_METHOD": "plain"}, "OAUTH_CODE_CHALLENGE_METHOD='plain': expected S256"),
        ({"OAUTH_BLOCKED_GROUPS": "[1, 2"}, "OAUTH_BLOCKED_GROUPS='[1, 2'"),
        (
            {"OPENID_REDIRECT_URI": "/oauth/oidc/callback"},
            "OPENID_REDIRECT_URI='/oauth/oidc/callback': expected",
        ),
        (
            {"OAUTH_SESSION_TOKEN_ENCRYPTION_KEY": "not-a-key"},
            "OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=(redacted): key 1",
        ),
        ({"ENABLE_OAUTH_SIGNUP": "yes"}, "ENABLE_OAUTH_SIGNUP='yes': expected true or false"),
    ],
)
def test_misconfiguration_stops_start_up(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    assert any(expected in problem for problem in problems(tmp_path, **env)), problems(tmp_path, **env)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    found = problems(
        tmp_path, GOOGLE_CLIENT_ID="id", GITHUB_CLIENT_SECRET=CLIENT_SECRET, OAUTH_SCOPES="email"
    )
    assert len(found) == 3


def test_a_bad_rotation_key_is_named_without_its_value(tmp_path: Path) -> None:
    good = Fernet.generate_key().decode()
    found = problems(tmp_path, OAUTH_SESSION_TOKEN_ENCRYPTION_KEY=f"{good},{CLIENT_SECRET}")
    assert any("key 2 of 2 is not a Fernet key" in p for p in found)
    assert not any(good in p for p in found)


def test_providers_from_open_webui_variables(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "DATA_DIR": str(tmp_path),
            "WEBUI_SECRET_KEY": SECRET,
            "GOOGLE_CLIENT_ID": "g-id",
            "GOOGLE_CLIENT_SECRET": CLIENT_SECRET,
            "MICROSOFT_CLIENT_ID": "m-id",
            "MICROSOFT_CLIENT_SECRET": CLIENT_SECRET,
            "MICROSOFT_CLIENT_TENANT_ID": "contoso.onmicrosoft.com",
            "GITHUB_CLIENT_ID": "gh-id",
            "GITHUB_CLIENT_SECRET": CLIENT_SECRET,
            "OAUTH_CLIENT_ID": "o-id",
            "OAUTH_CODE_CHALLENGE_METHOD": "S256",  # a public client: PKCE, no secret
            "OPENID_PROVIDER_URL": "https://sso.example.com/realms/x/.well-known/openid-configuration",
            "OAUTH_PROVIDER_NAME": "Keycloak",
            "OAUTH_GROUP_CLAIM": "roles_and_groups.groups",
            "OAUTH_ALLOWED_DOMAINS": "Example.COM, example.org",
            "OAUTH_BLOCKED_GROUPS": "contractors, temp-*",
        }
    )
    providers = configured_providers(settings)
    assert {p.id: p.name for p in providers.values()} == {
        "google": "Google",
        "microsoft": "Microsoft",
        "github": "GitHub",
        "oidc": "Keycloak",
    }
    assert providers["google"].discovery_url == "https://accounts.google.com/.well-known/openid-configuration"
    assert providers["microsoft"].discovery_url == (
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration?appid=m-id"
    )
    assert providers["github"].authorize_url == "https://github.com/login/oauth/authorize"
    assert providers["github"].emails_url == "https://api.github.com/user/emails"
    assert providers["github"].sub_claim == "id" and providers["github"].scope == "user:email"
    assert providers["oidc"].client_secret is None and providers["oidc"].token_endpoint_auth_method == "none"
    # Only Microsoft's xms_edov vouches for an address; only its token response ignores OIDC scopes.
    assert [p.id for p in providers.values() if p.domain_verified_claim == "xms_edov"] == ["microsoft"]
    assert [p.id for p in providers.values() if not p.grant_names_scopes] == ["microsoft"]
    policy = link_policy(settings)
    assert policy.allowed_domains == frozenset({"example.com", "example.org"})
    assert policy.groups_claim == "roles_and_groups.groups"  # the legacy alias still works
    assert policy.blocked_groups == ("contractors", "temp-*")
    assert not policy.signup and not policy.merge_by_email  # Open WebUI's defaults, both off
    shown = redacted_settings(settings)
    for name in ("GOOGLE_CLIENT_SECRET", "MICROSOFT_CLIENT_SECRET", "GITHUB_CLIENT_SECRET"):
        assert shown[name] == "(set, redacted)"
    assert CLIENT_SECRET not in repr(settings) and CLIENT_SECRET not in str(shown)


def test_list_parsers() -> None:
    assert json_or_comma_list('["a", " b ", ""]') == ("a", "b")
    assert json_or_comma_list("a, b,,") == ("a", "b")
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    assert fernet_keys(f" {keys[0]} ; {keys[1]} ") == tuple(keys)
    with pytest.raises(ValueError, match="JSON array of strings"):
        json_or_comma_list('["a", 1]')


def test_merging_by_email_next_to_open_sign_up_is_a_production_finding(tmp_path: Path) -> None:
    base = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET}
    merging = load_settings({**base, "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": "true"})  # sign-up is on by default
    assert any(
        f.startswith("OAUTH_MERGE_ACCOUNTS_BY_EMAIL/ENABLE_SIGNUP:") for f in production_findings(merging)
    )
    for closed in ({"ENABLE_SIGNUP": "false"}, {"ENABLE_PASSWORD_AUTH": "false"}):
        settings = load_settings({**base, "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": "true", **closed})
        assert not any(f.startswith("OAUTH_MERGE") for f in production_findings(settings))
    assert not any(f.startswith("OAUTH_MERGE") for f in production_findings(load_settings(base)))


@pytest.mark.parametrize(
    ("tenant", "management", "found"),
    [
        ("common", {"ENABLE_OAUTH_ROLE_MANAGEMENT": "true"}, True),
        ("Organizations", {"ENABLE_OAUTH_GROUP_MANAGEMENT": "true"}, True),
        ("common", {}, False),
        ("contoso.com", {"ENABLE_OAUTH_ROLE_MANAGEMENT": "true"}, False),
    ],
    ids=["roles", "groups", "neither", "one-tenant"],
)
def test_roles_from_every_microsoft_tenant_are_a_production_finding(
    tmp_path: Path, tenant: str, management: dict[str, str], found: bool
) -> None:
    """With the multi-tenant endpoint, each tenant's own admins assign the app's roles and name
    their groups: any tenant could make wardgate admins (found by review)."""
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "MICROSOFT_CLIENT_ID": "app"}
    env |= {"MICROSOFT_CLIENT_SECRET": "s", "MICROSOFT_CLIENT_TENANT_ID": tenant}
    findings = production_findings(load_settings({**env, **management}))
    flagged = [
        f for f in findings if f.startswith("MICROSOFT_CLIENT_TENANT_ID/ENABLE_OAUTH_ROLE_MANAGEMENT:")
    ]
    assert bool(flagged) is found
    assert all(severity_of(f) == "high" for f in flagged)


@pytest.mark.parametrize(
    ("env", "needs"),
    [
        ({}, False),
        ({"OAUTH_BLOCKED_GROUPS": "contractors"}, True),
        ({"ENABLE_OAUTH_GROUP_MANAGEMENT": "true"}, True),
        ({"OLLAMA_ALLOWED_GROUPS": "ai-users"}, True),
        ({"OPENAI_ALLOWED_GROUPS": "ai-users"}, True),
        ({"UPSTREAM_ALLOWED_GROUPS": "ai-users"}, True),
    ],
)
def test_group_rules_make_the_groups_claim_required(tmp_path: Path, env: dict[str, str], needs: bool) -> None:
    settings = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, **env})
    assert link_policy(settings).needs_groups is needs
