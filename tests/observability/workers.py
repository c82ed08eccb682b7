"""What the multiprocess test runs in its spawned children: a worker's metrics, and a scrape."""

from __future__ import annotations

from multiprocessing.queues import Queue


def work(sessions: int, view_age: float, done: Queue[tuple[float, int]]) -> None:
    """A worker: some authentications, one request, its view's age; then it reports (age, pid)."""
    import os

    from wardgate.observability import metrics

    assert metrics.is_multiprocess()
    for _ in range(sessions):
        metrics.observe_authentication("session")
    metrics.RequestDurations().observe("api", 200, 0.01)
    metrics.observe_view_sync(view_age)
    done.put((view_age, os.getpid()))


def scrape(out: Queue[str]) -> None:
    """Another worker answering /metrics: every worker's values."""
    from wardgate.observability import metrics

    out.put(metrics.exposition(live_sessions=3).decode())
