"""Data under keys derived from the site's secret, across a rotation: readable under the fallback,
re-encrypted under the current secret as it is used (TOTP secrets, provider tokens), accepted under
either (recovery codes, sealed sign-ins, passkey ceremonies)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from wardgate.config import Settings, load_settings
from wardgate.errors import BadRequestError
from wardgate.gateway import mfa_keys
from wardgate.mfa.factors import FactorStore
from wardgate.mfa.passkeys import Ceremony, CeremonySealer
from wardgate.mfa.recovery import RecoveryCodeHasher
from wardgate.oauth.presets import state_keys, token_keys
from wardgate.oauth.state import LoginState, LoginStateSealer
from wardgate.oauth.token_store import ProviderTokens, ProviderTokenStore, token_cipher
from wardgate.security.keys import MFA_SECRETS, OAUTH_TOKENS, SecretRing, fernet_key, key_id
from wardgate.storage import db, schema
from wardgate.storage.models import AuthSession, OAuthToken, TotpFactor, User

OLD, NEW = "old-secret-" * 5, "new-secret-" * 5


def settings(tmp_path: Path, current: str, *fallbacks: str, **env: str) -> Settings:
    values = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": current, **env}
    if fallbacks:
        values["WEBUI_SECRET_KEY_FALLBACKS"] = ",".join(fallbacks)
    return load_settings(values, env_file=None)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine: Engine = db.create_db_engine(f"sqlite:///{tmp_path / 'wardgate.db'}")
    schema.upgrade(engine)
    yield db.session_factory(engine)
    engine.dispose()


def a_user(sessions: sessionmaker[Session]) -> str:
    """A user row with one live session; its id (the session's id is the user's id reversed)."""
    user_id = str(uuid.uuid4())
    now = int(time.time())
    with sessions() as s, s.begin():
        s.add(
            User(
                id=user_id,
                email=f"{user_id}@example.com",
                name="Ada",
                role="user",
                created_at=now,
                updated_at=now,
                session_stamp="s",
                password_hash=None,
            )
        )
        s.flush()
        s.add(
            AuthSession(
                id=user_id[::-1],
                user_id=user_id,
                auth_method="password",
                created_at=now,
                expires_at=now + 3600,
                last_seen_at=now,
            )
        )
    return user_id


def factor_store(sessions: sessionmaker[Session], s: Settings, ring: SecretRing) -> FactorStore:
    return FactorStore(sessions, mfa_keys(s), RecoveryCodeHasher(ring))


def stored_totp(sessions: sessionmaker[Session], user_id: str) -> bytes:
    with sessions() as s:
        row = s.get(TotpFactor, user_id)
        assert row is not None
        return row.ciphertext.encode()


def test_a_totp_secret_survives_the_rotation_and_moves_to_the_new_key(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    user_id = a_user(sessions)
    before = factor_store(sessions, settings(tmp_path, OLD), SecretRing.of(OLD))
    secret = before.start_totp(user_id)
    old_key, new_key = Fernet(fernet_key(OLD, MFA_SECRETS)), Fernet(fernet_key(NEW, MFA_SECRETS))
    assert old_key.decrypt(stored_totp(sessions, user_id)).decode() == secret
    rotated = factor_store(sessions, settings(tmp_path, NEW, OLD), SecretRing.of(NEW, [OLD]))
    assert rotated.totp_secrets_behind() == (1, 0)
    assert rotated.confirm_totp(user_id, pyotp.TOTP(secret).now())
    assert new_key.decrypt(stored_totp(sessions, user_id)).decode() == secret  # re-encrypted on use
    assert rotated.totp_secrets_behind() == (0, 0)
    with pytest.raises(InvalidToken):
        old_key.decrypt(stored_totp(sessions, user_id))


def test_explicit_mfa_keys_stay_first_and_the_fallbacks_come_after(tmp_path: Path) -> None:
    explicit = Fernet.generate_key().decode()
    keys = mfa_keys(settings(tmp_path, NEW, OLD, MFA_ENCRYPTION_KEY=explicit))
    assert keys == [explicit.encode(), fernet_key(NEW, MFA_SECRETS), fernet_key(OLD, MFA_SECRETS)]


def test_recovery_codes_of_either_secret_are_accepted_once(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    user_id = a_user(sessions)
    before = factor_store(sessions, settings(tmp_path, OLD), SecretRing.of(OLD))
    codes = before.new_recovery_codes(user_id)
    rotated = factor_store(sessions, settings(tmp_path, NEW, OLD), SecretRing.of(NEW, [OLD]))
    assert rotated.recovery_codes_by_secret() == {key_id(OLD): 1}
    assert rotated.use_recovery_code(user_id, codes[0])
    assert not rotated.use_recovery_code(user_id, codes[0])  # single use, whichever digest matched
    dropped = factor_store(sessions, settings(tmp_path, NEW), SecretRing.of(NEW))
    assert not dropped.use_recovery_code(user_id, codes[1])  # made under a dropped secret: ended
    fresh = dropped.new_recovery_codes(user_id)
    assert dropped.recovery_codes_by_secret() == {key_id(NEW): 1}
    assert dropped.use_recovery_code(user_id, fresh[0])


def test_provider_tokens_survive_the_rotation_and_move_to_the_new_key(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    user_id = a_user(sessions)
    tokens = ProviderTokens(provider="oidc", access_token="at-1", refresh_token="rt-1", expires_at=2**40)
    ProviderTokenStore(sessions, token_cipher(token_keys(settings(tmp_path, OLD)))).save(
        user_id[::-1], user_id, tokens
    )
    rotated = ProviderTokenStore(sessions, token_cipher(token_keys(settings(tmp_path, NEW, OLD))))
    assert rotated.load(user_id[::-1]) == tokens
    with sessions() as s:
        row = s.get(OAuthToken, user_id[::-1])
        assert row is not None
        assert b"at-1" in Fernet(fernet_key(NEW, OAUTH_TOKENS)).decrypt(row.ciphertext.encode())
    dropped = ProviderTokenStore(sessions, token_cipher(token_keys(settings(tmp_path, NEW))))
    assert dropped.load(user_id[::-1]) == tokens


def test_a_sign_in_begun_under_either_secret_finishes(tmp_path: Path) -> None:
    state = LoginState("id-1", "oidc", "state-1", None, "verifier", "https://x/cb", "/", int(time.time()))
    sealed_old = LoginStateSealer(state_keys(settings(tmp_path, OLD))).seal(state)
    sealed_new = LoginStateSealer(state_keys(settings(tmp_path, NEW, OLD))).seal(state)
    for rotated in (settings(tmp_path, NEW, OLD), settings(tmp_path, OLD, NEW)):  # both passes' instances
        sealer = LoginStateSealer(state_keys(rotated))
        assert sealer.open(sealed_old, "oidc", "state-1") == sealer.open(sealed_new, "oidc", "state-1")
    with pytest.raises(BadRequestError):
        LoginStateSealer(state_keys(settings(tmp_path, NEW))).open(sealed_old, "oidc", "state-1")


def test_a_passkey_ceremony_begun_under_either_secret_finishes() -> None:
    ceremony = Ceremony("c-1", "signin", "Y2hhbGxlbmdl", int(time.time()))
    sealed_old = CeremonySealer(OLD).seal(ceremony)
    assert CeremonySealer(SecretRing.of(NEW, [OLD])).open(sealed_old, "signin") == ceremony
    sealed_new = CeremonySealer(SecretRing.of(NEW, [OLD])).seal(ceremony)
    assert CeremonySealer(SecretRing.of(OLD, [NEW])).open(sealed_new, "signin") == ceremony
    with pytest.raises(BadRequestError):
        CeremonySealer(NEW).open(sealed_old, "signin")
