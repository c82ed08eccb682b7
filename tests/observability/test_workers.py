"""Several worker processes (UVICORN_WORKERS): each keeps its values in the shared directory that the
supervisor prepared, and whichever worker answers the scrape reports them all."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from tests.observability import workers
from tests.observability.conftest import value
from wardgate.observability.metrics import MULTIPROCESS_VARIABLE, prepare_multiprocess, worker_exited


def _scrape(context: multiprocessing.context.SpawnContext) -> str:
    out = context.Queue()
    child = context.Process(target=workers.scrape, args=(out,))
    child.start()
    text: str = out.get(timeout=30)
    child.join(timeout=30)
    return text


def test_the_scrape_sums_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_99999.db").write_bytes(b"left by an earlier run")
    environment = prepare_multiprocess(directory)
    assert environment == {MULTIPROCESS_VARIABLE: str(directory)}
    assert list(directory.iterdir()) == []  # an earlier run's values are not summed into this one's
    for name, setting in environment.items():
        monkeypatch.setenv(name, setting)  # what the supervisor hands its spawned workers
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    children = [
        context.Process(target=workers.work, args=(3, 5.0, done)),
        context.Process(target=workers.work, args=(4, 2.0, done)),
    ]
    for child in children:
        child.start()
    pids = dict(done.get(timeout=30) for _ in children)  # view age -> pid
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0

    text = _scrape(context)
    assert value(text, "wardgate_authentications_total", outcome="session") == 7
    assert value(text, "wardgate_http_request_duration_seconds_count", route="api", status="200") == 2
    assert value(text, "wardgate_session_view_age_seconds") == 5.0  # the worst live worker
    assert value(text, "wardgate_sessions_live") == 3

    worker_exited(pids[5.0], directory)  # the one whose view was 5 s old
    text = _scrape(context)
    assert value(text, "wardgate_session_view_age_seconds") == 2.0  # a dead worker's gauge is gone
    assert value(text, "wardgate_authentications_total", outcome="session") == 7  # its counts are not
    worker_exited(pids[2.0], directory)
    only_the_scraper = value(_scrape(context), "wardgate_session_view_age_seconds")
    assert only_the_scraper == 0.0  # the live worker that answers, which never synchronised
