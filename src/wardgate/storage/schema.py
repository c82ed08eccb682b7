"""The schema's one linear migration chain (Alembic), applied safely by several instances at once.

Every start upgrades to the head (`upgrade`); operators also have `current`, `history` and
`downgrade` (the `wardgate db` commands). Instances take turns through a lock: a PostgreSQL advisory
lock, or a file lock beside the SQLite database.

Before the chain became linear, four migrations each followed 0001 directly, so a database made by
that code records four Alembic heads (`LEGACY_REVISIONS`). `upgrade` first rewrites such a record to
the one linear revision it corresponds to; the tables themselves are the same.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from wardgate.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x77617264  # "ward": the PostgreSQL advisory lock id for migrations
# The old revision ids, in the order of the linear chain that replaced them (old id -> new id).
LEGACY_REVISIONS = (
    ("0002_audit", "0002"),
    ("0002_oauth", "0003"),
    ("0004_api_keys", "0004"),
    ("0005_admin_lock", "0005"),
)


@dataclass(frozen=True, slots=True)
class Revision:
    """One migration of the chain."""

    id: str
    down: str | None
    title: str


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision of the chain."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:  # a branch was committed by mistake; tests/storage/test_migrations.py refuses it
        raise StoreError(f"the migration chain has {len(heads)} heads; expected one")
    return heads[0]


def history() -> list[Revision]:
    """Every migration, oldest first."""
    scripts = ScriptDirectory.from_config(_config())
    found = [
        Revision(s.revision, s.down_revision if isinstance(s.down_revision, str) else None, s.doc or "")
        for s in scripts.walk_revisions()
    ]
    return found[::-1]


def current(engine: Engine) -> str | None:
    """The database's revision (None: no schema yet); StoreError when it records several."""
    with engine.connect() as connection:
        revisions = MigrationContext.configure(connection).get_current_heads()
    if len(revisions) > 1:
        raise StoreError(
            f"the database records {len(revisions)} revisions ({', '.join(sorted(revisions))}); "
            "run `wardgate db upgrade` to move it onto the linear chain"
        )
    return revisions[0] if revisions else None


def upgrade(engine: Engine, *, lock_dir: Path | None = None, revision: str = "head") -> None:
    """Apply every migration up to `revision`, first moving a legacy (four-head) record onto the chain."""
    with _migration_lock(engine, lock_dir) as connection:
        _adopt_legacy_record(connection)
        _run(command.upgrade, connection, revision)


def downgrade(engine: Engine, revision: str, *, lock_dir: Path | None = None) -> None:
    """Undo migrations down to `revision` ("base": all of them). Their tables and rows are dropped."""
    with _migration_lock(engine, lock_dir) as connection:
        _adopt_legacy_record(connection)
        _run(command.downgrade, connection, revision)


def _run(operation: Any, connection: Connection, revision: str) -> None:
    try:
        operation(_config(connection), revision)
    except CommandError as exc:
        connection.rollback()
        # Such as a revision this version of wardgate does not know: the database was migrated by a
        # newer one, or the name is mistyped. Say so instead of a traceback.
        raise StoreError(f"database migration to {revision!r} failed: {exc}") from None
    connection.commit()


def _adopt_legacy_record(connection: Connection) -> None:
    """Rewrite the four-head `alembic_version` of the old migrations as the one linear revision."""
    if not inspect(connection).has_table("alembic_version"):
        return
    recorded = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
    legacy = {old for old, _new in LEGACY_REVISIONS}
    if not recorded & legacy:
        return
    if recorded - legacy - {"0001"}:
        raise StoreError(f"the database records an unknown mix of revisions: {', '.join(sorted(recorded))}")
    position, applied = "0001", recorded & legacy
    for old, new in LEGACY_REVISIONS:
        if old not in applied:
            break
        position = new
        applied.discard(old)
    if applied:
        # A later migration without an earlier one: no point of the linear chain has these tables.
        raise StoreError(
            "the database records the migrations "
            f"{', '.join(sorted(recorded))}, which do not follow one another; restore a backup taken "
            "before they were changed by hand"
        )
    connection.execute(text("DELETE FROM alembic_version"))
    connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": position})


@contextmanager
def _migration_lock(engine: Engine, lock_dir: Path | None) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database or ""
    lock_path = (lock_dir or Path(database).parent) / ".wardgate-migrate.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        with engine.connect() as connection:
            yield connection
