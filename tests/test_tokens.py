"""Session tokens: only our own HS256 tokens with every claim pass; everything else is a 401-type error."""

from __future__ import annotations

import time
import warnings
from datetime import timedelta

import jwt
import pytest

from wardgate.errors import AuthenticationError
from wardgate.security.tokens import TokenCodec

KEY = "k" * 48
CLAIMS = {"id": "u1", "jti": "s1", "iat": int(time.time()), "typ": "session", "session_stamp": "st"}


def test_round_trip_has_open_webui_claims() -> None:
    codec = TokenCodec([KEY], timedelta(hours=1))
    issued = codec.issue("user-1", "stamp")
    payload = jwt.decode(issued.token, KEY, algorithms=["HS256"])
    assert set(payload) == {"id", "jti", "iat", "exp", "typ", "session_stamp"}
    assert payload["exp"] - payload["iat"] == 3600
    claims = codec.verify(issued.token)
    assert (claims.user_id, claims.session_id, claims.session_stamp) == ("user-1", issued.session_id, "stamp")


def test_no_expiry_means_no_exp_claim() -> None:
    codec = TokenCodec([KEY], None)
    issued = codec.issue("u", "s")
    assert "exp" not in jwt.decode(issued.token, KEY, algorithms=["HS256"])
    assert codec.verify(issued.token).expires_at is None


def test_key_rotation_verifies_old_tokens_and_signs_with_the_new_key() -> None:
    old = TokenCodec(["old" * 16], timedelta(hours=1)).issue("u", "s")
    rotated = TokenCodec(["new" * 16, "old" * 16], timedelta(hours=1))
    assert rotated.verify(old.token).user_id == "u"
    fresh = rotated.issue("u", "s")
    jwt.decode(fresh.token, "new" * 16, algorithms=["HS256"])


def _hs512(claims: dict[str, object]) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the short-key warning is beside the point here
        return jwt.encode(claims, KEY, algorithm="HS512")


def _forged(**changes: object) -> str:
    claims = {**CLAIMS, **changes}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, KEY, algorithm="HS256")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_forged(exp=int(time.time()) - 10), id="expired"),
        pytest.param(jwt.encode(CLAIMS, None, algorithm="none"), id="alg-none"),
        pytest.param(_hs512(CLAIMS), id="other-algorithm"),
        pytest.param(jwt.encode(CLAIMS, "wrong" * 10, algorithm="HS256"), id="wrong-key"),
        pytest.param(_forged(id=None), id="missing-id"),
        pytest.param(_forged(jti=None), id="missing-jti"),
        pytest.param(_forged(iat=None), id="missing-iat"),
        pytest.param(_forged(typ=None), id="missing-typ"),
        pytest.param(_forged(session_stamp=None), id="missing-stamp"),
        pytest.param(_forged(typ="automation"), id="other-type"),
        pytest.param(_forged(id=12345), id="non-string-id"),
        pytest.param(_forged(iat="yesterday"), id="non-numeric-iat"),
        pytest.param(_forged(iat=True), id="boolean-iat"),
        pytest.param(_forged(iat=int(time.time()) + 3600), id="issued-in-the-future"),
        pytest.param(_forged() + "x", id="tampered-signature"),
        pytest.param("a" * 10_000, id="oversized"),
        pytest.param("not.a.token", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationError):
        TokenCodec([KEY], timedelta(hours=1)).verify(token)


def test_tampered_payload_is_refused() -> None:
    token = TokenCodec([KEY], timedelta(hours=1)).issue("u", "s").token
    header, _payload, signature = token.split(".")
    other = jwt.encode({**CLAIMS, "id": "admin"}, "x" * 48, algorithm="HS256").split(".")[1]
    with pytest.raises(AuthenticationError):
        TokenCodec([KEY], None).verify(f"{header}.{other}.{signature}")


def test_empty_key_ring_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        TokenCodec([], None)


@pytest.mark.slow
def test_a_cached_token_is_still_refused_once_it_expires() -> None:
    codec = TokenCodec([KEY], timedelta(seconds=2))
    issued = codec.issue("u", "s", now=time.time() - 1)
    assert codec.verify(issued.token).user_id == "u"  # verified once: now in the cache
    time.sleep(1.2)
    with pytest.raises(AuthenticationError):
        codec.verify(issued.token)


def test_failures_are_not_cached() -> None:
    codec = TokenCodec([KEY], timedelta(hours=1))
    token = codec.issue("u", "s").token
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            codec.verify(token + "x")
    assert codec.verify(token).user_id == "u"
