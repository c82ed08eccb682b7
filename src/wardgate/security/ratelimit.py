"""Rate limits on the `limits` library (moving window), shared through Redis when configured.

Storage is chosen by URL: in-process memory by default, Redis when `REDIS_URL` is set (keys under
`REDIS_KEY_PREFIX`). If Redis fails, limits fall back to this machine's local storage — logged and
reported by `/health`, never "no limit" — and Redis is retried in the background until it answers
again. The local storage is the process's memory, or, with several worker processes on the machine
(`UVICORN_WORKERS`), an SQLite file they share (`SqliteRateStorage`), so that the workers count
together exactly as one process would; when that file cannot answer, the attempt is refused (503).

A `Limit` names a rate (`wardgate.config.values.Rate`, parsed at load from forms such as `5/3m`) and
a bucket key per caller, IP or account; the counting is the `limits` library's moving window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from limits import RateLimitItem
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from wardgate.config.network import address_bucket
from wardgate.config.values import Rate
from wardgate.errors import RateLimitedError, StoreUnavailableError
from wardgate.security.rate_storage import SqliteRateStorage

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_REDIS_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Limit:
    """A named rate (for messages and bucket keys) and its parsed item."""

    name: str
    item: RateLimitItem

    @classmethod
    def of(cls, name: str, rate: Rate) -> Limit:
        """The limit `name` at a configured rate."""
        return cls(name, rate.item)


class RateLimiter:
    """Moving-window limits over Redis or memory, degrading to memory (never to nothing)."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        key_prefix: str = "wardgate",
        ipv6_prefix: int = 128,
        shared_file: Path | None = None,
    ) -> None:
        self.ipv6_prefix = ipv6_prefix  # RATE_LIMIT_IPV6_PREFIX; 128: every address apart
        self._local: Storage = (
            SqliteRateStorage(shared_file, wrap_exceptions=True) if shared_file else MemoryStorage()
        )
        self._redis: Storage | None = None
        if redis_url:
            self._redis = RedisStorage(
                redis_url,
                key_prefix=f"{key_prefix}:ratelimit",
                wrap_exceptions=True,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
        self._degraded_since: float | None = None
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """`redis`, `memory` or `workers` (the shared file); `… (redis unavailable)` when degraded."""
        local = "workers" if isinstance(self._local, SqliteRateStorage) else "memory"
        if self._redis is None:
            return local
        return f"{local} (redis unavailable)" if self._degraded_since is not None else "redis"

    @property
    def in_memory(self) -> bool:
        """True when a hit never waits on I/O (this process's memory, no Redis, no shared file)."""
        return self._redis is None and isinstance(self._local, MemoryStorage)

    def client_key(self, ip: str | None) -> str:
        """The bucket a client address counts in: IPv6 grouped by its network (`address_bucket`)."""
        return address_bucket(ip, self.ipv6_prefix)

    def hit(self, limit: Limit, key: str) -> None:
        """Count one attempt, or raise RateLimitedError (with the wait) when the limit is reached."""
        if not self._call(lambda s: MovingWindowRateLimiter(s).hit(limit.item, key)):
            raise self._refusal(limit, key)

    def check(self, limit: Limit, key: str) -> None:
        """Raise RateLimitedError if the limit is already reached, without counting an attempt."""
        if not self._call(lambda s: MovingWindowRateLimiter(s).test(limit.item, key)):
            raise self._refusal(limit, key)

    def count(self, limit: Limit, key: str) -> None:
        """Count one attempt without refusing (the refusal comes from `check` next time)."""
        self._call(lambda s: MovingWindowRateLimiter(s).hit(limit.item, key))

    def clear(self, limit: Limit, key: str) -> None:
        """Forget the attempts under `key` (after a successful sign-in)."""
        self._call(lambda s: MovingWindowRateLimiter(s).clear(limit.item, key))

    def probe(self) -> str:
        """Re-check Redis now (for /health) and return `backend`."""
        if self._redis is not None:
            if self._degraded_since is not None:
                self._storage()
            elif not self._redis_answers():
                self._degrade("no answer")
        return self.backend

    def _refusal(self, limit: Limit, key: str) -> RateLimitedError:
        stats = self._call(lambda s: MovingWindowRateLimiter(s).get_window_stats(limit.item, key))
        wait = max(1, int(stats.reset_time - time.time()) + 1)
        return RateLimitedError(
            f"Too many attempts. Try again in {wait} seconds.",
            retry_after=wait,
            code="rate_limited",
            bucket=f"{limit.name}:{key}",
            window=limit.item.get_expiry(),
        )

    def _call(self, operation: Callable[[Storage], T]) -> T:
        storage = self._storage()
        try:
            return operation(storage)
        except StorageError as exc:
            if storage is not self._redis:
                raise _local_unavailable(exc) from exc
            self._degrade(type(exc).__name__)
        try:
            return operation(self._local)
        except StorageError as exc:
            raise _local_unavailable(exc) from exc

    def _storage(self) -> Storage:
        if self._redis is None:
            return self._local
        with self._lock:
            degraded_since = self._degraded_since
        if degraded_since is None:
            return self._redis
        if time.monotonic() - degraded_since >= _RETRY_REDIS_SECONDS and self._redis_answers():
            log.warning("rate limits: Redis is back; limits are shared across instances again")
            with self._lock:
                self._degraded_since = None
            return self._redis
        return self._local

    def _redis_answers(self) -> bool:
        if self._redis is None:
            return False
        try:
            answered = bool(self._redis.check())
        except (StorageError, OSError):
            answered = False
        if not answered:  # retry again only after the interval: a hung Redis must not slow every call
            with self._lock:
                self._degraded_since = time.monotonic()
        return answered

    def _degrade(self, reason: str) -> None:
        with self._lock:
            first = self._degraded_since is None
            self._degraded_since = time.monotonic()
        if first:
            log.error("rate limits: Redis unavailable (%s); falling back to per-instance limits", reason)


def _local_unavailable(exc: StorageError) -> StoreUnavailableError:
    """The workers' shared file did not answer: refuse (never count nothing)."""
    log.error("rate limits: the shared counter file failed (%s)", type(exc.storage_error).__name__)
    return StoreUnavailableError("the rate-limit counters cannot be read; try again shortly")
