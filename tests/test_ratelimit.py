"""Rate limits: the documented grammar, one contract for memory and Redis storage, never "no limit"."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL, SECRET
from tests.scaleout.harness import PrivateRedis, free_port, wait_for
from tests.servers import SERVICES_HOW, service_missing
from wardgate.config import load_settings
from wardgate.config.values import RATE_FORM, parse_rate
from wardgate.errors import ConfigError, RateLimitedError
from wardgate.security.rate_storage import SqliteRateStorage
from wardgate.security.ratelimit import Limit, RateLimiter

DEGRADED = "memory (redis unavailable)"


# --- the grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "amount", "seconds"),
    [
        ("5/3m", 5, 180),  # Open WebUI's SIGNIN_RATE_LIMIT form, the default
        ("20/180s", 20, 180),
        ("30/1m", 30, 60),
        ("10/1h", 10, 3600),
        ("1/1d", 1, 86400),
        (" 5 / 3m ", 5, 180),
        ("10/minute", 10, 60),
        ("100/hour", 100, 3600),
        ("5 per minute", 5, 60),
        ("10/3 minutes", 10, 180),
        ("10 per 3 minutes", 10, 180),
        ("2/second", 2, 1),
        ("1000/day", 1000, 86400),
    ],
)
def test_parse_rate_accepts_the_documented_forms(text: str, amount: int, seconds: int) -> None:
    item = parse_rate(text).item
    assert (item.amount, item.get_expiry()) == (amount, seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "5",
        "abc",
        "3 minutes",  # a period without a count
        "/3m",
        "5/",
        "5/3x",
        "5/3M",
        "5/1w",
        "5/fortnight",
        "1.5/1m",
        "5/1.5m",
        "-1/1m",
        "5/3m;10/1h",  # one limit per variable, not a list
        "5/3m, 10/1h",
    ],
)
def test_parse_rate_refuses_other_forms_naming_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected <count>/<period> such as 5/3m, 20/180s") as caught:
        parse_rate(text)
    assert str(caught.value) == f"expected {RATE_FORM}"


def test_parse_rate_refuses_a_zero_count() -> None:
    with pytest.raises(ValueError, match=r"with a count of at least 1$"):
        parse_rate("0/1m")


@pytest.mark.parametrize("text", ["5/0m", "5/0s", "5 per 0 second", "5/0 minutes"])
def test_parse_rate_refuses_a_zero_period_instead_of_reading_it_as_one_second(text: str) -> None:
    # BUG: `limits` turns a multiple of 0 into 1, so "5/0m" silently becomes 5 per *second* — a limit
    # far weaker than anything the operator could have meant. Invalid input must be refused.
    with pytest.raises(ValueError, match=r"^expected <count>/<period>"):
        parse_rate(text)


RATE_VARIABLES = [
    "SIGNIN_RATE_LIMIT",
    "SIGNIN_IP_RATE_LIMIT",
    "SIGNUP_RATE_LIMIT",
    "PASSWORD_CHANGE_RATE_LIMIT",
    "AUTH_FAILURE_RATE_LIMIT",
]


def test_configuration_refuses_every_invalid_rate_naming_each_variable(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET}
    bad = {name: f"5/fortnight-{i}" for i, name in enumerate(RATE_VARIABLES)}
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, **bad})
    assert caught.value.problems == [f"{name}={value!r}: expected {RATE_FORM}" for name, value in bad.items()]


def test_configuration_defaults_are_the_documented_limits(tmp_path: Path) -> None:
    settings = load_settings({"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET})
    assert (
        settings.signin_rate_limit.text,
        settings.signin_ip_rate_limit.text,
        settings.signup_rate_limit.text,
        settings.password_change_rate_limit.text,
        settings.auth_failure_rate_limit.text,
    ) == ("5/3m", "20/3m", "10/1h", "5/15m", "30/1m")


@pytest.mark.slow
def test_serve_refuses_to_start_with_an_invalid_signin_rate_limit(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path), "WEBUI_SECRET_KEY": SECRET, "SIGNIN_RATE_LIMIT": "5 per fortnight"}
    done = subprocess.run(
        [sys.executable, "-m", "wardgate", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"wardgate: Invalid configuration:\n  - SIGNIN_RATE_LIMIT='5 per fortnight': expected {RATE_FORM}\n"
    )
    assert not (tmp_path / "wardgate.db").exists()  # refused before touching any store


# --- one contract, every storage ----------------------------------------------------------------


def _redis_keys(url: str, pattern: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=pattern))
    finally:
        client.close()


def _delete_keys(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
def prefix() -> str:
    """A REDIS_KEY_PREFIX of this test's own, so the shared Redis holds no state between tests."""
    return f"wgtest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", "workers", pytest.param("redis", marks=pytest.mark.redis)])
def limiter(request: pytest.FixtureRequest, prefix: str, tmp_path: Path) -> Iterator[RateLimiter]:
    """A limiter on in-process memory, one on the workers' shared file, and one on the shared
    Redis under a unique prefix."""
    if request.param == "memory":
        yield RateLimiter(None)
        return
    if request.param == "workers":
        yield RateLimiter(None, shared_file=tmp_path / "ratelimits.db")
        return
    if not REDIS_URL:
        service_missing("Redis (WARDGATE_TEST_REDIS_URL)", SERVICES_HOW)
    yield RateLimiter(REDIS_URL, key_prefix=prefix)
    _delete_keys(REDIS_URL, f"{prefix}:*")


THREE_PER_MINUTE = Limit.of("test", parse_rate("3/1m"))


def assert_refused(caught: pytest.ExceptionInfo[RateLimitedError], window: int) -> None:
    """A 429 carrying a wait within the window, the same in the header and the message."""
    error = caught.value
    assert (error.status_code, error.code) == (429, "rate_limited")
    assert window - 5 <= error.retry_after <= window + 1
    assert error.headers == {"Retry-After": str(error.retry_after)}
    assert error.detail == f"Too many attempts. Try again in {error.retry_after} seconds."


class TestLimiterContract:
    """What every storage must do; run against memory and real Redis."""

    def test_backend_names_the_storage(self, limiter: RateLimiter) -> None:
        assert limiter.backend in ("memory", "workers", "redis")
        limiter.hit(THREE_PER_MINUTE, "k")
        assert limiter.backend in ("memory", "workers", "redis")

    def test_hits_are_allowed_up_to_the_limit_then_refused_with_a_wait(self, limiter: RateLimiter) -> None:
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "k")
        for _ in range(2):  # and it stays refused
            with pytest.raises(RateLimitedError) as caught:
                limiter.hit(THREE_PER_MINUTE, "k")
            assert_refused(caught, 60)

    def test_check_does_not_count(self, limiter: RateLimiter) -> None:
        for _ in range(10):
            limiter.check(THREE_PER_MINUTE, "k")
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "k")
        with pytest.raises(RateLimitedError) as caught:
            limiter.check(THREE_PER_MINUTE, "k")
        assert_refused(caught, 60)

    def test_count_never_refuses_and_check_refuses_afterwards(self, limiter: RateLimiter) -> None:
        for _ in range(5):
            limiter.count(THREE_PER_MINUTE, "k")
        with pytest.raises(RateLimitedError):
            limiter.check(THREE_PER_MINUTE, "k")
        with pytest.raises(RateLimitedError):
            limiter.hit(THREE_PER_MINUTE, "k")

    def test_clear_resets_the_key(self, limiter: RateLimiter) -> None:
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "k")
        limiter.clear(THREE_PER_MINUTE, "k")
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "k")
        with pytest.raises(RateLimitedError):
            limiter.hit(THREE_PER_MINUTE, "k")

    def test_keys_are_isolated(self, limiter: RateLimiter) -> None:
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "signin:a@example.com:10.0.0.1")
        with pytest.raises(RateLimitedError):
            limiter.hit(THREE_PER_MINUTE, "signin:a@example.com:10.0.0.1")
        limiter.hit(THREE_PER_MINUTE, "signin:a@example.com:10.0.0.2")
        limiter.hit(THREE_PER_MINUTE, "signin:b@example.com:10.0.0.1")
        limiter.clear(THREE_PER_MINUTE, "signin:b@example.com:10.0.0.1")
        with pytest.raises(RateLimitedError):  # clearing one key leaves the others alone
            limiter.check(THREE_PER_MINUTE, "signin:a@example.com:10.0.0.1")

    @pytest.mark.slow
    def test_the_window_moves(self, limiter: RateLimiter) -> None:
        # Moving, not fixed: a slot frees exactly when its own attempt leaves the window, so at no
        # point can 2x the limit pass around a window boundary.
        limit = Limit.of("test", parse_rate("2/2s"))
        limiter.hit(limit, "k")
        time.sleep(1.0)
        limiter.hit(limit, "k")
        with pytest.raises(RateLimitedError) as caught:
            limiter.hit(limit, "k")
        assert caught.value.retry_after in (1, 2)
        time.sleep(1.1)  # the first attempt has left the window, the second has not
        limiter.hit(limit, "k")
        with pytest.raises(RateLimitedError):
            limiter.hit(limit, "k")


@pytest.mark.redis
def test_redis_keys_live_under_redis_key_prefix(prefix: str) -> None:
    assert REDIS_URL
    marker = uuid.uuid4().hex
    limiter = RateLimiter(REDIS_URL, key_prefix=prefix)
    other = RateLimiter(REDIS_URL, key_prefix=f"{prefix}-other")
    try:
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, f"signin:{marker}")
        assert limiter.backend == "redis"
        keys = _redis_keys(REDIS_URL, f"*{marker}*")
        assert keys == [f"{prefix}:ratelimit:{THREE_PER_MINUTE.item.key_for(f'signin:{marker}')}"]
        # Another prefix (another deployment on the same Redis) shares nothing.
        for _ in range(3):
            other.hit(THREE_PER_MINUTE, f"signin:{marker}")
        with pytest.raises(RateLimitedError):
            limiter.hit(THREE_PER_MINUTE, f"signin:{marker}")
        assert len(_redis_keys(REDIS_URL, f"*{marker}*")) == 2
        limiter.clear(THREE_PER_MINUTE, f"signin:{marker}")
        assert _redis_keys(REDIS_URL, f"*{marker}*") == [
            f"{prefix}-other:ratelimit:{THREE_PER_MINUTE.item.key_for(f'signin:{marker}')}"
        ]
    finally:
        _delete_keys(REDIS_URL, f"{prefix}*:*")


# --- Redis failing: per-instance limits, never none ---------------------------------------------


def test_unreachable_redis_falls_back_to_memory_and_still_limits(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(f"redis://127.0.0.1:{free_port()}/0", key_prefix="wgtest")
    with caplog.at_level(logging.ERROR, logger="wardgate.security.ratelimit"):
        for _ in range(3):
            limiter.hit(THREE_PER_MINUTE, "k")
        assert limiter.backend == DEGRADED
        with pytest.raises(RateLimitedError) as caught:
            limiter.hit(THREE_PER_MINUTE, "k")
    assert_refused(caught, 60)
    # Logged once, naming the consequence, not once per request.
    assert [r.getMessage() for r in caplog.records] == [
        "rate limits: Redis unavailable (StorageError); falling back to per-instance limits"
    ]


def test_redis_stopping_mid_run_falls_back_to_memory_then_recovers(private_redis: PrivateRedis) -> None:
    limiter = RateLimiter(private_redis.url, key_prefix="wgtest")
    limit = Limit.of("test", parse_rate("3/1m"))
    limiter.hit(limit, "before")
    assert limiter.backend == "redis"
    assert _redis_keys(private_redis.url, "wgtest:ratelimit:*") == [
        f"wgtest:ratelimit:{limit.item.key_for('before')}"
    ]

    private_redis.stop()
    for _ in range(3):  # this process's own memory now counts: still three, never unlimited
        limiter.hit(limit, "during")
    assert limiter.backend == DEGRADED
    with pytest.raises(RateLimitedError) as caught:
        limiter.hit(limit, "during")
    assert_refused(caught, 60)

    private_redis.start()  # same port, empty (no persistence)
    # The limiter retries Redis on use, at most every 5 s; bounded wait.
    waited = wait_for(
        lambda: limiter.check(limit, "probe") is None and limiter.backend == "redis",
        timeout=8,
        interval=0.25,
        what="the rate limiter to use Redis again",
    )
    assert waited <= 6.5
    limiter.hit(limit, "after")
    assert _redis_keys(private_redis.url, "wgtest:ratelimit:*") == [
        f"wgtest:ratelimit:{limit.item.key_for('after')}"
    ]


def test_a_hung_redis_is_retried_once_per_interval_not_on_every_call(
    private_redis: PrivateRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frozen Redis accepts connections and never answers, so every call to it costs the 0.5 s
    # socket timeout. Degraded mode must not pay that on every call after the retry interval.
    monkeypatch.setattr("wardgate.security.ratelimit._RETRY_REDIS_SECONDS", 1.0)  # the real 5 s, shortened
    limiter = RateLimiter(private_redis.url, key_prefix="wgtest")
    limit = Limit.of("test", parse_rate("100/1m"))
    private_redis.pause()
    try:
        limiter.hit(limit, "k")  # times out once, then memory
        assert limiter.backend == DEGRADED
        time.sleep(1.1)
        started = time.monotonic()
        for _ in range(5):
            limiter.hit(limit, "k")
        elapsed = time.monotonic() - started
    finally:
        private_redis.resume()
    assert limiter.backend == DEGRADED
    # One retry (<= 0.5 s) is expected; 5 x 0.5 s means every call waited for the hung Redis.
    assert elapsed < 1.0, f"5 calls took {elapsed:.2f} s: each one retried the hung Redis"


def test_the_workers_file_counts_each_key_in_one_row_through_passing_windows_and_sweeps(
    tmp_path: Path,
) -> None:
    """A hit reads a per-key count instead of the window (a huge limit costs no more per hit); the
    count stays exact as entries leave the window one hit at a time and in sweeps."""
    storage = SqliteRateStorage(tmp_path / "ratelimits.db")
    assert [storage.acquire_entry("k", 3, 1) for _ in range(4)] == [True, True, True, False]
    assert storage.get_moving_window("k", 3, 1)[1] == 3
    time.sleep(1.05)  # the three leave the window: the next hit deletes them and counts down
    assert [storage.acquire_entry("k", 3, 1) for _ in range(4)] == [True, True, True, False]
    time.sleep(1.05)
    storage.acquire_entry("other", 5, 60)  # a write that sweeps every expired entry (the first one)
    storage._next_sweep = 0.0
    storage.acquire_entry("other", 5, 60)
    rows = storage._db.execute("SELECT key, n FROM entry_counts ORDER BY key").fetchall()
    assert rows == [("other", 2)]  # "k" swept with its count, not left behind negative or stale
    assert (tmp_path / "ratelimits.db").stat().st_mode & 0o077 == 0  # names and addresses: private
