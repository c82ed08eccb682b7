"""The database: an engine chosen by URL, and the factory of ORM sessions (migrations: `schema`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import ConfigError

log = logging.getLogger(__name__)
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


def raise_for_url(url: str) -> None:
    """Raise ConfigError when DATABASE_URL is unusable."""
    problem = check_database_url(url)
    if problem:
        raise ConfigError([f"DATABASE_URL: {problem}"])
