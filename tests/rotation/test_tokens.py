"""The secret ring and session tokens under rotation: `kid` names the key, a dropped key ends its tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta

import jwt
import pytest

from wardgate.errors import AuthenticationError
from wardgate.security.keys import KEY_ID, SecretRing, derive_key, key_id
from wardgate.security.tokens import TokenCodec

OLD, NEW, OTHER = "old-secret-" * 5, "new-secret-" * 5, "other-secret-" * 5
HOUR = timedelta(hours=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, object], claims: dict[str, object], key: bytes) -> str:
    """A JWS built by hand: whatever header an attacker likes, HMAC-SHA256 under `key`."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def claims_of(user: str = "u") -> dict[str, object]:
    now = int(time.time())
    return {"id": user, "jti": "j-1", "iat": now, "exp": now + 600, "typ": "session", "session_stamp": "s"}


def test_a_key_id_is_derived_public_and_stable() -> None:
    kid = key_id(NEW)
    assert kid == derive_key(NEW, KEY_ID)[:8].hex() and len(kid) == 16
    assert kid == key_id(NEW) != key_id(OLD)
    assert NEW not in kid and kid not in NEW


def test_the_ring_never_shows_its_secrets() -> None:
    ring = SecretRing.of(NEW, [OLD])
    assert ring.ids == (key_id(NEW), key_id(OLD)) and ring.current_id == key_id(NEW)
    assert NEW not in repr(ring) and OLD not in repr(ring) and key_id(OLD) in repr(ring)
    with pytest.raises(ValueError, match="twice"):
        SecretRing.of(NEW, [NEW])
    with pytest.raises(ValueError, match="non-empty"):
        SecretRing.of(NEW, [""])


def test_new_tokens_carry_the_current_key_id() -> None:
    token = TokenCodec([NEW, OLD], HOUR).issue("u", "s").token
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT", "kid": key_id(NEW)}
    jwt.decode(token, NEW, algorithms=["HS256"])  # signed with the current secret, not a fallback


def test_a_token_of_a_fallback_key_stays_valid() -> None:
    old = TokenCodec([OLD], HOUR).issue("u", "s")
    claims = TokenCodec([NEW, OLD], HOUR).verify(old.token)
    assert claims.user_id == "u" and claims.session_id == old.session_id


def test_a_token_of_a_removed_key_is_refused() -> None:
    old = TokenCodec([OLD], HOUR).issue("u", "s").token
    assert TokenCodec([NEW, OLD], HOUR).verify(old).user_id == "u"
    with pytest.raises(AuthenticationError) as refused:
        TokenCodec([NEW], HOUR).verify(old)
    assert refused.value.code == "invalid_token"


def test_a_token_without_kid_is_tried_against_every_key() -> None:
    """Tokens issued before key ids: no `kid`, signed with what is now a fallback."""
    legacy = jwt.encode(claims_of(), OLD, algorithm="HS256")
    assert "kid" not in jwt.get_unverified_header(legacy)
    assert TokenCodec([NEW, OLD], HOUR).verify(legacy).user_id == "u"
    with pytest.raises(AuthenticationError):
        TokenCodec([NEW], HOUR).verify(legacy)


def test_a_kid_names_the_only_key_tried() -> None:
    """A token naming the current key but signed with the fallback is forged, not 'try the others'."""
    token = jwt.encode(claims_of(), OLD, algorithm="HS256", headers={"kid": key_id(NEW)})
    with pytest.raises(AuthenticationError):
        TokenCodec([NEW, OLD], HOUR).verify(token)


@pytest.mark.parametrize("kid", ["0123456789abcdef", "", "../../etc/passwd", 7, None, ["a"], {"k": 1}])
def test_an_unknown_or_malformed_kid_is_refused(kid: object) -> None:
    header: dict[str, object] = {"alg": "HS256", "typ": "JWT", "kid": kid}
    if kid is None:
        header["kid"] = key_id(OTHER)
    token = forged(header, claims_of(), OLD.encode())
    with pytest.raises(AuthenticationError) as refused:
        TokenCodec([NEW, OLD], HOUR).verify(token)
    assert refused.value.code == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "HS384", "HS512", "RS256", "ES256", "hs256"])
def test_algorithm_confusion_is_refused(alg: str) -> None:
    """RFC 8725 §2.1/§3.1: the token never chooses the algorithm, whatever key its `kid` names."""
    header = {"alg": alg, "typ": "JWT", "kid": key_id(OLD)}
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims_of()).encode())}"
    signature = "" if alg == "none" else _b64(hmac.new(OLD.encode(), signing_input.encode(), digest).digest())
    with pytest.raises(AuthenticationError):
        TokenCodec([NEW, OLD], HOUR).verify(f"{signing_input}.{signature}")


def test_an_expired_fallback_token_says_expired() -> None:
    old = TokenCodec([OLD], timedelta(seconds=1)).issue("u", "s", now=time.time() - 10).token
    with pytest.raises(AuthenticationError) as refused:
        TokenCodec([NEW, OLD], HOUR).verify(old)
    assert refused.value.code == "token_expired"


def test_verification_costs_one_hmac_whatever_the_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a token with `kid` is checked against its key alone, not each of nine."""
    fallbacks = [f"fallback-{n}-" * 5 for n in range(8)]
    codec = TokenCodec([NEW, *fallbacks], HOUR)
    tokens = [TokenCodec([fallbacks[-1]], HOUR).issue(f"u{n}", "s").token for n in range(5)]
    calls: list[object] = []
    real = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    for token in tokens:
        codec.verify(token)
    assert calls == [fallbacks[-1]] * len(tokens)
