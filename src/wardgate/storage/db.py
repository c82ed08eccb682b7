"""The database: an engine chosen by URL, and Alembic migrations that are safe to run concurrently."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import ConfigError

log = logging.getLogger(__name__)
_MIGRATION_LOCK_KEY = 0x77617264  # "ward": the PostgreSQL advisory lock id for migrations
SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg")


def normalise_url(url: str) -> str:
    """Accept Open WebUI's `postgresql://` / `postgres://` forms and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def check_database_url(url: str) -> str | None:
    """Return a problem description for an unusable DATABASE_URL, else None."""
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        return "expected sqlite:///path/to/file.db or postgresql+psycopg://user:password@host:5432/db"
    if parsed.drivername not in SUPPORTED_SCHEMES:
        return f"unsupported database {parsed.drivername!r}; expected sqlite or postgresql+psycopg"
    return None


def create_db_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 30,
    pool_recycle: int = 1800,
) -> Engine:
    """Create the engine; SQLite gets WAL, a busy timeout and enforced foreign keys."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
        "pool_recycle": pool_recycle,
        "pool_pre_ping": True,
    }
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A factory of ORM sessions that keep loaded values after commit."""
    return sessionmaker(engine, expire_on_commit=False)


def upgrade(engine: Engine, *, lock_dir: Path | None = None) -> None:
    """Apply every pending migration, holding a lock so concurrent instances take turns."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with _migration_lock(engine, lock_dir) as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")  # every branch: features add tables independently
        connection.commit()


@contextmanager
def _migration_lock(engine: Engine, lock_dir: Path | None) -> Iterator[Any]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database or ""
    lock_path = (lock_dir or Path(database).parent) / ".wardgate-migrate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        with engine.connect() as connection:
            yield connection


def raise_for_url(url: str) -> None:
    """Raise ConfigError when DATABASE_URL is unusable."""
    problem = check_database_url(url)
    if problem:
        raise ConfigError([f"DATABASE_URL: {problem}"])
