"""Unit tests of the pure parts: claim shapes, role and group rules, redirects, the sealed state."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import pytest
from cryptography.fernet import Fernet

from wardgate.errors import BadRequestError
from wardgate.oauth.claims import claim_at, claim_values, first_blocked, is_true, mapped_role
from wardgate.oauth.service import add_query
from wardgate.oauth.state import (
    STATE_EXPIRED,
    STATE_MISMATCH,
    STATE_MISSING,
    LoginState,
    LoginStateSealer,
    safe_redirect_path,
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
