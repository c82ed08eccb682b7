"""Unit tests of the pure parts: claim shapes, role and group rules, redirects, the sealed state."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from wardgate import oauth
from wardgate.errors import BadRequestError
from wardgate.http.rendering import safe_redirect_path
from wardgate.oauth.claims import claim_at, claim_values, exact_address, first_blocked, is_true, mapped_role
from wardgate.oauth.flow import link_request, missing_scopes, new_login
from wardgate.oauth.linking import MERGE_UNPROVEN, SCOPE_NARROWED, LinkRequest
from wardgate.oauth.presets import _GITHUB_SCOPES, _GOOGLE_SCOPES, ProviderConfig
from wardgate.oauth.refusals import REFUSALS, refusal_message
from wardgate.oauth.service import add_query
from wardgate.oauth.state import (
    STATE_EXPIRED,
    STATE_MISMATCH,
    STATE_MISSING,
    LoginState,
    LoginStateSealer,
)

CLAIMS = {
    "realm_access": {"roles": ["admin", "offline"]},
    "roles": "viewer, editor",
    "https://example.com/groups": ["a", "b"],
    "level": 3,
    "flag": True,
}


@pytest.mark.parametrize(
    ("path", "separator", "expected"),
    [
        ("realm_access.roles", ",", ["admin", "offline"]),
        ("roles", ",", ["viewer", "editor"]),
        ("https://example.com/groups", ";", ["a", "b"]),  # a flat key containing dots
        ("level", ",", ["3"]),
        ("flag", ",", None),
        ("missing.path", ",", None),
        ("realm_access", ",", None),
    ],
)
def test_claim_shapes(path: str, separator: str, expected: list[str] | None) -> None:
    assert claim_values(claim_at(CLAIMS, path), separator) == expected


def test_role_rules() -> None:
    assert mapped_role(["x", "admin"], ["user"], ["admin"]) == "admin"  # admin wins
    assert mapped_role(["user"], ["user", "admin"], ["admin"]) == "user"
    assert mapped_role(["other"], ["*"], ["admin"]) == "user"
    assert mapped_role(["other"], ["user"], ["admin"]) is None
    assert mapped_role([], ["user"], ["admin"]) is None


def test_blocked_groups_exact_or_wildcard() -> None:
    assert first_blocked(["staff", "contractors-eu"], ["contractors-*"]) == "contractors-eu"
    assert first_blocked(["staff"], ["Staff"]) is None  # case-sensitive, as group names are
    assert first_blocked(["a.b"], ["a?b"]) == "a.b"
    assert first_blocked([], ["*"]) is None


def test_boolean_claims() -> None:
    assert is_true(True) and is_true("true") and is_true("TRUE")
    assert not is_true("yes") and not is_true(1) and not is_true(None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/", "/"),
        ("/chat/1?x=y#z", "/chat/1?x=y#z"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
        ("/ok\\..", "/"),
        ("/a\x00b", "/"),
        ("/caf\u00e9", "/"),
        ("", "/"),
        (None, "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_safe_redirect_path(value: str | None, expected: str) -> None:
    assert safe_redirect_path(value) == expected


def login(**changes: object) -> LoginState:
    """A pending sign-in."""
    base = LoginState("id1", "oidc", "state-1", "nonce-1", "v" * 64, "https://x/cb", "/", int(time.time()))
    return LoginState(**{**asdict(base), **changes})  # type: ignore[arg-type]


def test_the_state_cookie_is_sealed_and_checked() -> None:
    key = Fernet.generate_key()
    sealer = LoginStateSealer(key)
    sealed = sealer.seal(login())
    assert "nonce-1" not in sealed and "v" * 20 not in sealed  # encrypted, not just signed
    assert sealer.open(sealed, "oidc", "state-1") == login()
    for provider, state, message in [
        ("oidc", "other", STATE_MISMATCH),
        ("google", "state-1", STATE_MISMATCH),
        ("oidc", None, STATE_MISMATCH),
    ]:
        with pytest.raises(BadRequestError) as caught:
            sealer.open(sealed, provider, state)
        assert caught.value.detail == message
    with pytest.raises(BadRequestError) as missing:
        sealer.open(None, "oidc", "state-1")
    assert missing.value.detail == STATE_MISSING
    old = Fernet(key).encrypt_at_time(json.dumps(asdict(login())).encode(), int(time.time()) - 601)
    for bad in (old.decode(), sealed[:-4] + "AAAA", "garbage", "é"):
        with pytest.raises(BadRequestError) as caught:
            sealer.open(bad, "oidc", "state-1")
        assert caught.value.detail == STATE_EXPIRED
    with pytest.raises(BadRequestError):
        LoginStateSealer(Fernet.generate_key()).open(sealed, "oidc", "state-1")  # another key


def test_end_session_url_is_encoded() -> None:
    url = add_query(
        "https://idp.example/logout?tenant=a b",
        {"id_token_hint": "x.y+z/=", "post_logout_redirect_uri": "https://app/auth?a=1&b=2"},
    )
    assert url == (
        "https://idp.example/logout?tenant=a+b&id_token_hint=x.y%2Bz%2F%3D"
        "&post_logout_redirect_uri=https%3A%2F%2Fapp%2Fauth%3Fa%3D1%26b%3D2"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("karl@example.com", "karl@example.com"),
        ("  Karl@Example.COM ", "karl@example.com"),
        ("a+tag@sub.example.com", "a+tag@sub.example.com"),
        ("\u212aarl@example.com", None),  # KELVIN SIGN: str.lower() would make it "karl@..."
        ("karl@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", None),  # full-width: IDNA maps to ASCII
        ("jos\u00e9@example.com", None),  # internationalised: refused for matching, never folded
        ("karl@xn--bcher-kva.example", "karl@xn--bcher-kva.example"),  # ASCII as it stands
        ("no-at-sign", None),
        ("two@@example.com", None),
        ("a@b@example.com", None),
        ("@example.com", None),
        ("karl@", None),
        ("ka rl@example.com", None),
        ("karl@example.com\x00", None),
        ("a" * 250 + "@example.com", None),
        (None, None),
        (42, None),
    ],
)
def test_one_exact_ascii_form_of_an_address(value: object, expected: str | None) -> None:
    assert exact_address(value) == expected


GOOGLE = ProviderConfig("google", "Google", "id", "s", "openid email profile", scope_aliases=_GOOGLE_SCOPES)
GITHUB = ProviderConfig("github", "GitHub", "id", "s", "user:email", scope_aliases=_GITHUB_SCOPES)
GENERIC = ProviderConfig(
    "oidc", "SSO", "id", "s", "openid email profile groups offline_access", discovery_url="https://x/"
)
MICROSOFT = ProviderConfig(
    "microsoft",
    "Microsoft",
    "id",
    "s",
    "openid email profile",
    discovery_url="https://x/",
    grant_names_scopes=False,
)


@pytest.mark.parametrize(
    ("provider", "granted", "missing"),
    [
        (GENERIC, None, set()),  # RFC 6749 §5.1: absent means as requested
        (GENERIC, "openid email profile groups", set()),  # offline_access is seldom echoed
        (GENERIC, "groups profile email openid extra", set()),
        (GENERIC, "openid email profile", {"groups"}),  # edited out of the authorization URL
        (GENERIC, ["openid", "email", "profile", "groups"], set()),
        (GENERIC, 7, {"email", "profile", "groups"}),
        (GENERIC, "email profile groups", set()),  # the verified ID token proves openid
        (MICROSOFT, "https://graph.microsoft.com/User.Read", set()),  # the access token's scopes only
        (
            GOOGLE,
            "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile",
            set(),
        ),
        (GOOGLE, "openid https://www.googleapis.com/auth/userinfo.profile", {"email"}),
        (GITHUB, "user:email", set()),
        (GITHUB, "read:org,user", set()),  # comma-separated; `user` includes user:email
        (GITHUB, "read:user", {"user:email"}),
        (GITHUB, "", set()),  # a GitHub App: permissions are the app's, the grant names no scope
        (GENERIC, "", {"email", "profile", "groups"}),
    ],
)
def test_granted_scope_must_cover_the_request(
    provider: ProviderConfig, granted: object, missing: set[str]
) -> None:
    token = {"access_token": "x"} if granted is None else {"access_token": "x", "scope": granted}
    assert missing_scopes(provider, token) == missing


def test_a_link_travels_in_the_sealed_state() -> None:
    key = Fernet.generate_key()
    sealer = LoginStateSealer(key)
    sign_in = new_login(GENERIC, "https://x/cb", "/")
    assert link_request(sealer.open(sealer.seal(sign_in), "oidc", sign_in.state)) is None
    link = new_login(GENERIC, "https://x/cb", "/account", LinkRequest("user-1", "session-1"))
    sealed = sealer.seal(link)
    assert "user-1" not in sealed and "session-1" not in sealed
    assert link_request(sealer.open(sealed, "oidc", link.state)) == LinkRequest("user-1", "session-1")
    # A cookie sealed before links existed still opens, as a sign-in.
    old = {k: v for k, v in asdict(sign_in).items() if k not in ("link_user", "link_session")}
    sealed_old = Fernet(key).encrypt(json.dumps(old).encode()).decode()
    assert link_request(sealer.open(sealed_old, "oidc", sign_in.state)) is None


def test_every_refusal_code_of_single_sign_on_has_its_fixed_message() -> None:
    """`/auth?error=<code>` shows fixed messages only: every code the oauth package raises has one."""
    raised = {
        code
        for path in Path(oauth.__file__).parent.glob("*.py")
        for code in re.findall(r'code="([a-z_]+)"', path.read_text())
    }
    assert raised and raised <= set(REFUSALS), raised - set(REFUSALS)
    assert refusal_message("oauth_merge_unproven") == MERGE_UNPROVEN
    assert refusal_message("provider_scope") == SCOPE_NARROWED
