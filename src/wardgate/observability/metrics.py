"""Prometheus metrics: one definition of each family, and the plain functions the layers call.

Labels are bounded and never name a person: route classes, status codes, outcomes, limit names
and upstream names come from code or configuration; model names from what an upstream metered,
capped at `MAX_MODELS` per process. User names, emails and ids are never labels.

Several worker processes (`UVICORN_WORKERS`). prometheus_client chooses where values live when it
is first imported, from `PROMETHEUS_MULTIPROC_DIR`: in memory without it, in files of that
directory (one per process) with it. The contract with the process supervisor:

1. In the parent, before any worker starts: `environment = prepare_multiprocess(directory)`
   (empties or creates the directory) and give every worker that environment. Workers must be fresh
   interpreters (spawned, as uvicorn's supervisor does), not forks of a parent that already imported
   prometheus_client without it.
2. When a worker exits: `worker_exited(pid, directory)`, so that its live gauges stop counting.

A single process uses neither and keeps its values in memory. `exposition()` collects whichever
applies: in a worker, the files of every process, summed (counters, histograms) or reduced as each
gauge says (`multiprocess_mode`). A worker opens its file when this module is imported (the
families without labels have a value from the start); nothing else touches the disk until used.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from time import perf_counter

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what every Prometheus server reads
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
MAX_MODELS = 100  # distinct (upstream, model) labels per process; others count as "other"
# Exact codes for the statuses wardgate answers on purpose; any other as its class ("5xx").
STATUSES = frozenset({200, 201, 204, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 409, 413})
STATUSES |= frozenset({415, 422, 429, 431, 500, 502, 503, 504})
# Authentication refusals by their error's stable code; any other refusal is "invalid" (401),
# "forbidden" (403), "rate_limited" (429) or "unavailable" (503) by its status.
_REFUSALS = {
    "not_authenticated": "anonymous",  # no credential at all
    "token_expired": "expired",
    "api_key_expired": "expired",
    "session_revoked": "revoked",
    "api_key_ended": "revoked",
}
_BY_STATUS = {403: "forbidden", 429: "rate_limited", 503: "unavailable"}
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_UPSTREAM_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# `*_created` series exist in one process only (never with workers): left out, so that a scrape
# shows the same families whatever the number of workers.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
REQUESTS = Histogram(
    "wardgate_http_request_duration_seconds",
    "Requests by route class and status, and how long each took to answer in full.",
    ["route", "status"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
AUTHENTICATIONS = Counter(
    "wardgate_authentications",
    "Credential checks by outcome (session, api_key, anonymous, expired, revoked, invalid, ...).",
    ["outcome"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "wardgate_rate_limit_refusals",
    "Requests refused by a rate limit (429) or admission control (503), by the limit's name.",
    ["limit"],
    registry=REGISTRY,
)
BUDGET_REFUSED = Counter(
    "wardgate_budget_refusals",
    "Model calls refused because a token budget was used up, by whose budget (key, user, group).",
    ["kind"],
    registry=REGISTRY,
)
UPSTREAM_TTFB = Histogram(
    "wardgate_upstream_ttfb_seconds",
    "From sending a request upstream to the upstream's answer head.",
    ["upstream"],
    buckets=_UPSTREAM_SECONDS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "wardgate_upstream_duration_seconds",
    "Proxied exchanges by upstream and its status, from sending the request to the answer's end.",
    ["upstream", "status"],
    buckets=_UPSTREAM_SECONDS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "wardgate_upstream_errors",
    "Upstream exchanges that failed: timeout, unavailable (refused, reset, garbled), broken (cut short).",
    ["upstream", "kind"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "wardgate_model_tokens",
    "Tokens the model servers reported using, by upstream, model and kind (prompt, completion).",
    ["upstream", "model", "kind"],
    registry=REGISTRY,
)
VIEW_AGE = Gauge(
    "wardgate_session_view_age_seconds",
    "Seconds since the revocation view last synchronised, the worst among live workers.",
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
REVOCATION_LAG = Histogram(
    "wardgate_revocation_propagation_seconds",
    "From a change written to the change log to this process's view applying it.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
LIVE_SESSIONS = "wardgate_sessions_live"  # read from the database when scraped (`exposition`)


def prepare_multiprocess(directory: Path) -> dict[str, str]:
    """Empty (or create) `directory` for the workers' metric files; the environment they need."""
    if directory.exists():
        shutil.rmtree(directory)  # values of a previous run would be summed into this one's
    directory.mkdir(parents=True, mode=0o700)
    return {MULTIPROCESS_VARIABLE: str(directory)}


def worker_exited(pid: int, directory: Path) -> None:
    """A worker is gone: its live gauges stop counting (its counters stay in the sums)."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def is_multiprocess() -> bool:
    """Whether this process keeps its values in the shared directory (a worker among several)."""
    return values.ValueClass is not values.MutexValue


class _Scrape(Collector):
    """One scrape: this process's families (or every worker's), then what is read at scrape time."""

    def __init__(self, extra: list[Metric]) -> None:
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        source: Collector = REGISTRY
        if is_multiprocess():  # every worker's files (the directory from the environment it was given)
            source = MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        yield from source.collect()
        yield from self._extra


def exposition(*, live_sessions: int | None) -> bytes:
    """The text Prometheus scrapes; `live_sessions` is left out when the database could not tell."""
    extra: list[Metric] = []
    if live_sessions is not None:
        extra.append(GaugeMetricFamily(LIVE_SESSIONS, "Sessions neither ended nor expired.", live_sessions))
    return generate_latest(_Scrape(extra))


def status_label(status: int) -> str:
    """A status as a label: the exact code when it is one of `STATUSES`, else its class."""
    return str(status) if status in STATUSES else f"{status // 100}xx"


class RequestDurations:
    """The request histogram's children, made once per (route class, status): `observe` is hot."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, int], Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        child = self._children.get((route, status))
        if child is None:
            child = self._children[route, status] = REQUESTS.labels(route, status_label(status))
        child.observe(seconds)


@cache
def _outcome(outcome: str) -> Counter:
    return AUTHENTICATIONS.labels(outcome)


def observe_authentication(outcome: str) -> None:
    """A credential was checked: `session` or `api_key` when accepted, else a refusal's outcome."""
    _outcome(outcome).inc()


def refusal_outcome(status: int, code: str) -> str:
    """The bounded outcome of an authentication refusal with this status and error code."""
    return _REFUSALS.get(code) or _BY_STATUS.get(status, "invalid")


def observe_refusal(code: str, bucket: str | None) -> None:
    """A rate-limited, busy or over-budget refusal (`RateLimitedError`'s code and bucket).

    A bucket is "<limit name>:<key>": only the name, a constant of the code, becomes a label; a
    budget's is "budget:<kind>:<owner>:<period>", of which only the kind is kept.
    """
    parts = bucket.split(":", 2) if bucket else []
    if code == "budget_exhausted":
        _budget(parts[1] if len(parts) > 1 and parts[0] == "budget" else "other").inc()
    else:
        _limit(parts[0] if parts else code).inc()


@cache
def _budget(kind: str) -> Counter:
    return BUDGET_REFUSED.labels(kind if kind in ("key", "user", "group") else "other")


@cache
def _limit(name: str) -> Counter:
    bounded = name if len(name) <= 40 and name.replace("-", "").replace("_", "").isalnum() else "other"
    return RATE_LIMITED.labels(bounded)


class UpstreamCall:
    """One exchange with an upstream, timed from when it is sent."""

    __slots__ = ("_started", "_status", "upstream")

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self._started = perf_counter()
        self._status = "error"

    def answered(self, status: int) -> None:
        """The answer's head arrived."""
        _ttfb(self.upstream).observe(perf_counter() - self._started)
        self._status = _STATUS_CLASSES[status // 100] if 1 <= status // 100 <= 5 else "error"

    def failed(self, kind: str) -> None:
        """`timeout`, `unavailable` (refused, reset, garbled) or `broken` (the answer cut short)."""
        UPSTREAM_ERRORS.labels(self.upstream, kind).inc()

    def ended(self) -> None:
        """The exchange is over, whichever way."""
        _duration(self.upstream, self._status).observe(perf_counter() - self._started)


class _Unmeasured(UpstreamCall):
    """The exchanges of an application whose metrics nobody may read: nothing is timed or counted
    (about 3 µs a proxied call saved)."""

    __slots__ = ()

    def __init__(self) -> None:
        self.upstream = ""

    def answered(self, status: int) -> None:
        """Not recorded."""

    def failed(self, kind: str) -> None:
        """Not recorded."""

    def ended(self) -> None:
        """Not recorded."""


UNMEASURED: UpstreamCall = _Unmeasured()
_STATUS_CLASSES = {n: f"{n}xx" for n in range(1, 6)}


# Children by upstream (configured, so few): a proxied call looks them up, never makes them.
@cache
def _ttfb(upstream: str) -> Histogram:
    return UPSTREAM_TTFB.labels(upstream)


@cache
def _duration(upstream: str, status: str) -> Histogram:
    return UPSTREAM_DURATION.labels(upstream, status)


_models: set[tuple[str, str]] = set()


def count_tokens(upstream: str, model: str, prompt: int | None, completion: int | None) -> None:
    """Tokens an upstream reported for one call (`None`: not reported)."""
    if (upstream, model) not in _models:
        if len(_models) >= MAX_MODELS:
            model = "other"  # a server that accepts any name must not grow the series without bound
        else:
            _models.add((upstream, model))
    if prompt:
        TOKENS.labels(upstream, model, "prompt").inc(prompt)
    if completion:
        TOKENS.labels(upstream, model, "completion").inc(completion)


def observe_view_sync(age_seconds: float) -> None:
    """The revocation view's age now: seconds since it last synchronised (0 right after a sync)."""
    VIEW_AGE.set(age_seconds)


def observe_revocation_lag(seconds: float) -> None:
    """A change from the log reached this process's view `seconds` after it was written."""
    REVOCATION_LAG.observe(max(0.0, seconds))


def family_names(lines: Iterable[str]) -> set[str]:
    """The metric family names of an exposition's `# TYPE` lines (for tests and the dashboard check)."""
    return {line.split()[2] for line in lines if line.startswith("# TYPE ")}
