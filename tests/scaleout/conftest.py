"""Fixtures of the scale-out tests: one private Redis, one fresh PostgreSQL database, three instances.

Module-scoped: starting three processes costs seconds on two cores, so the tests of a module share
one cluster. Each test uses its own accounts and client IPs (via `X-Forwarded-For`, which the
instances believe from loopback, the default FORWARDED_ALLOW_IPS), so no test relies on another's
counters; the cluster is healthy again at the end of every test.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import pytest

from tests.conftest import SECRET, postgres_database
from tests.scaleout.harness import Instance, PrivateRedis, start_together


class Cluster:
    """Three `wardgate serve` processes sharing one PostgreSQL database and one Redis."""

    def __init__(self, instances: list[Instance], redis_server: PrivateRedis, database_url: str) -> None:
        self.instances = instances
        self.redis = redis_server
        self.database_url = database_url
        # API clients, not browsers: refuse every cookie so tokens only travel as Bearer headers.
        self.clients = {
            i.name: httpx.Client(
                base_url=i.url, timeout=10, cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
            )
            for i in instances
        }
        self.revoked: list[str] = []
        """Every token any test revoked: the restart test checks that each is still refused."""

    def __getitem__(self, name: str) -> httpx.Client:
        return self.clients[name]

    def restart(self) -> None:
        """Stop all three, then start all three at the same moment (same ports, same database)."""
        for instance in self.instances:
            instance.stop()
        start_together(self.instances)

    def close(self) -> None:
        """Stop every process and close the clients."""
        for client in self.clients.values():
            client.close()
        for instance in self.instances:
            instance.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A, B and C, launched at the same moment on a fresh database (migrations race for real)."""
    workdir = tmp_path_factory.mktemp("cluster")
    redis_server = PrivateRedis(workdir)
    redis_server.start()
    databases = postgres_database()
    database_url = next(databases)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "WEBUI_SECRET_KEY": SECRET,
        "SESSION_SYNC_INTERVAL": "5",  # the poll, far slower than the channel it backs up
    }
    instances = [Instance(name, dict(env), workdir / name) for name in ("A", "B", "C")]
    running: Cluster | None = None
    try:
        start_together(instances)
        running = Cluster(instances, redis_server, database_url)
        yield running
    finally:
        if running is not None:
            running.close()
        for instance in instances:
            instance.stop()
        redis_server.stop()
        databases.close()  # drops the database (after every process has exited)
