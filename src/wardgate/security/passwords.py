"""Password hashing: Argon2id for new hashes, Open WebUI's bcrypt hashes verified and upgraded.

Parameters follow the OWASP Password Storage Cheat Sheet (Argon2id, m=19 MiB, t=2, p=1). Hashing is
CPU- and memory-heavy on purpose, so callers run it in worker threads, and a bounded semaphore admits
at most `max_concurrent` hashes at once: beyond that a request is refused fast (`BusyError`) instead
of queueing without bound.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher as _Argon2Hasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from wardgate.errors import BadRequestError, BusyError

# bcrypt only ever looked at the first 72 bytes; Open WebUI verified legacy hashes that way, so we
# must too — explicitly, only for verification, and the upgrade re-hashes the full password.
BCRYPT_MAX_BYTES = 72
MAX_PASSWORD_BYTES = 1024  # Argon2 has no practical limit; this bounds the work an attacker can ask for.
_ADMISSION_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of a password check; `new_hash` is set when the stored hash should be replaced."""

    ok: bool
    new_hash: str | None = None


class PasswordHasher:
    """Hash and verify passwords with bounded concurrency."""

    def __init__(self, *, max_concurrent: int = 4, time_cost: int = 2, memory_cost: int = 19456) -> None:
        self._argon2 = _Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)
        self._slots = threading.BoundedSemaphore(max_concurrent)
        # A real hash under the same parameters: unknown accounts cost the same work as known ones.
        self._placeholder = _placeholder(time_cost, memory_cost)

    def hash(self, password: str) -> str:
        """Return an Argon2id hash of `password` (check its length first with `check_length`)."""
        check_length(password)
        with self._admitted():
            return self._argon2.hash(password)

    def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check `password` against `stored_hash` (None: unknown account, checked against a placeholder)."""
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            return Verification(ok=False)
        with self._admitted():
            if stored_hash is None:
                self._verify_argon2(self._placeholder, password)
                return Verification(ok=False)
            if stored_hash.startswith("$argon2"):
                ok = self._verify_argon2(stored_hash, password)
                upgrade = ok and self._argon2.check_needs_rehash(stored_hash)
            else:
                ok = _verify_bcrypt(stored_hash, password)
                upgrade = ok
            new_hash = self._argon2.hash(password) if upgrade else None
        return Verification(ok=ok, new_hash=new_hash)

    def _verify_argon2(self, stored_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _admitted(self) -> _Admission:
        return _Admission(self._slots)


class _Admission:
    """Context manager holding one hashing slot, or refusing with BusyError."""

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self._slots = slots

    def __enter__(self) -> None:
        if not self._slots.acquire(timeout=_ADMISSION_WAIT_SECONDS):
            raise BusyError("The server is busy checking passwords; try again in a moment.", retry_after=2)

    def __exit__(self, *exc_info: object) -> None:
        self._slots.release()


@functools.cache
def _placeholder(time_cost: int, memory_cost: int) -> str:
    """The hash unknown accounts are checked against: made once per process and parameters (its
    only job is to cost what a real verification costs; its value is never compared to anything)."""
    hasher = _Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)
    return hasher.hash("wardgate-placeholder-for-timing-equalisation")


def _verify_bcrypt(stored_hash: str, password: str) -> bool:
    candidate = password.encode()[:BCRYPT_MAX_BYTES]
    try:
        return bcrypt.checkpw(candidate, stored_hash.encode())
    except ValueError:  # malformed stored hash: never raise, never match
        return False


def check_length(password: str) -> None:
    """Refuse passwords over the hasher's limit with a clear message instead of truncating them."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise BadRequestError(
            f"Password is too long (at most {MAX_PASSWORD_BYTES} bytes).", code="password_too_long"
        )
