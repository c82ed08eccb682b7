"""Password hashing: Argon2id, Open WebUI's bcrypt hashes verified and upgraded, limits explicit."""

from __future__ import annotations

import threading
import time

import bcrypt
import pytest

from wardgate.errors import BadRequestError, BusyError
from wardgate.security.passwords import MAX_PASSWORD_BYTES, PasswordHasher


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


def test_new_hashes_are_argon2id_with_owasp_parameters(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert hasher.verify("correct horse", stored).ok
    assert not hasher.verify("wrong horse", stored).ok
    assert hasher.verify("correct horse", stored).new_hash is None


def test_bcrypt_hashes_verify_and_are_upgraded(hasher: PasswordHasher) -> None:
    legacy = bcrypt.hashpw(b"open-webui-password", bcrypt.gensalt(4)).decode()
    result = hasher.verify("open-webui-password", legacy)
    assert result.ok and result.new_hash is not None and result.new_hash.startswith("$argon2id$")
    assert hasher.verify("open-webui-password", result.new_hash).ok
    assert not hasher.verify("other", legacy).ok


def test_bcrypt_legacy_verification_uses_the_first_72_bytes_like_open_webui(hasher: PasswordHasher) -> None:
    long_password = "p" * 100
    legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    result = hasher.verify(long_password, legacy)
    assert result.ok
    assert result.new_hash is not None
    # The upgraded hash covers the whole password: the 72-byte prefix alone no longer matches.
    assert not hasher.verify("p" * 72, result.new_hash).ok


def test_overlong_passwords_are_refused_explicitly(hasher: PasswordHasher) -> None:
    with pytest.raises(BadRequestError, match="too long"):
        hasher.hash("x" * (MAX_PASSWORD_BYTES + 1))
    assert not hasher.verify("x" * (MAX_PASSWORD_BYTES + 1), hasher.hash("x" * 10)).ok


@pytest.mark.parametrize("stored", ["", "garbage", "$argon2id$broken", "$2b$12$short"])
def test_malformed_hashes_never_match_and_never_raise(hasher: PasswordHasher, stored: str) -> None:
    assert not hasher.verify("anything", stored).ok


def test_unknown_accounts_cost_a_real_verification(hasher: PasswordHasher) -> None:
    known = hasher.hash("some password")

    def median(stored: str | None) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            hasher.verify("wrong password", stored)
            times.append(time.perf_counter() - start)
        return sorted(times)[2]

    assert 0.5 < median(None) / median(known) < 2.0


@pytest.mark.slow
def test_admission_control_refuses_instead_of_queueing() -> None:
    hasher = PasswordHasher(max_concurrent=1)
    hasher._admitted().__enter__()  # occupy the only slot
    try:
        with pytest.raises(BusyError) as caught:
            hasher.hash("password")
        assert caught.value.status_code == 503 and caught.value.headers["Retry-After"]
    finally:
        hasher._slots.release()
    assert hasher.verify("password", hasher.hash("password")).ok


def test_concurrent_hashing_is_bounded() -> None:
    hasher = PasswordHasher(max_concurrent=2)
    active, peak, lock = 0, 0, threading.Lock()
    original = hasher._argon2.hash

    def counting(password: str) -> str:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return original(password)
        finally:
            with lock:
                active -= 1

    class Counting:
        hash = staticmethod(counting)

    hasher._argon2 = Counting()  # type: ignore[assignment]
    threads = [threading.Thread(target=hasher.hash, args=("pw-12345678",)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak <= 2
