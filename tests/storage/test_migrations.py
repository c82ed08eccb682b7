"""The migration chain: one head, in order, agreeing with the models, reversible, and able to adopt a
database that the old four-head migrations made."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from wardgate.config import Settings
from wardgate.errors import StoreError, StoreUnavailableError
from wardgate.gateway import Gateway
from wardgate.identity.records import ClientInfo, UserChanges
from wardgate.sessions.registry import UserState
from wardgate.storage import db, schema
from wardgate.storage.models import PREFIX_INDEXES, Base
from wardgate.storage.revision import at_newest, newest

LEGACY = Path(__file__).parent / "legacy"
FIXTURE_PASSWORD = "correct-horse-battery"


def _engine(url: str) -> Engine:
    return db.create_db_engine(url)


def _snapshot(engine: Engine) -> dict[str, Any]:
    """Tables, columns, indexes, unique constraints and the app_state rows, comparable across runs."""
    inspector = inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        tables[table] = (
            sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)),
            sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in inspector.get_indexes(table)),
            sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
        )
    if "app_state" in tables:
        with engine.connect() as connection:
            tables["app_state rows"] = sorted(connection.execute(text("SELECT key FROM app_state")).scalars())
    return tables


def _differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        opts = {"compare_type": True, "include_object": _not_a_prefix_index}
        context = MigrationContext.configure(connection, opts=opts)
        return list(compare_metadata(context, Base.metadata))


def _not_a_prefix_index(obj: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
    """Migration 0009's expression indexes, which SQLAlchemy reflects wrongly or not at all."""
    return not (kind == "index" and name in PREFIX_INDEXES)


def _versions(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())


def test_the_chain_is_linear_numbered_and_has_one_head() -> None:
    scripts = ScriptDirectory(str(schema.MIGRATIONS))
    assert scripts.get_heads() == [schema.head()]
    chain = schema.history()
    assert [r.id for r in chain] == [f"{n:04d}" for n in range(1, len(chain) + 1)]
    assert [r.down for r in chain] == [None, *[r.id for r in chain[:-1]]]
    files = sorted(p.name for p in (schema.MIGRATIONS / "versions").glob("*.py"))
    assert [name[:4] for name in files] == [r.id for r in chain]  # file names follow the chain too


def test_the_start_up_check_names_the_head_alembic_does(database_url: str, tmp_path: Path) -> None:
    assert newest() == schema.head()
    engine = _engine(database_url)
    assert not at_newest(engine)  # no schema at all
    previous = schema.history()[-2].id
    schema.upgrade(engine, lock_dir=tmp_path, revision=previous)
    assert not at_newest(engine)  # one migration behind: the start must migrate
    schema.upgrade(engine, lock_dir=tmp_path)
    assert at_newest(engine)
    engine.dispose()


def test_a_start_at_the_head_does_not_load_alembic(tmp_path: Path) -> None:
    """Alembic is 11 MB and 100 ms of imports: only a start that migrates pays for them."""
    script = (
        "import asyncio, sys\n"
        "from wardgate.config import load_settings\n"
        "from wardgate.gateway import Gateway\n"
        f"settings = load_settings({{'DATA_DIR': {str(tmp_path)!r}}})\n"
        "async def start():\n"
        "    gateway = Gateway.build(settings)\n"
        "    await gateway.start(); await gateway.stop()\n"
        "asyncio.run(start())\n"
        "print('first', 'alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert first.stdout.split() == ["first", "True"]  # a new database is migrated
    assert again.stdout.split() == ["first", "False"]


def test_models_and_migrations_agree(database_url: str) -> None:
    engine = _engine(database_url)
    schema.upgrade(engine)
    assert _differences(engine) == []
    assert _versions(engine) == [schema.head()]
    engine.dispose()


def test_every_migration_downgrades_and_upgrades_again(database_url: str, tmp_path: Path) -> None:
    chain = [r.id for r in schema.history()]
    engine = _engine(database_url)
    # What each revision looks like when reached by upgrading a new database step by step...
    upward: dict[str, Any] = {}
    for revision in chain:
        schema.upgrade(engine, lock_dir=tmp_path, revision=revision)
        upward[revision] = _snapshot(engine)
    # ...is what it looks like when reached by undoing the migrations above it, one at a time.
    for revision in reversed(chain[:-1]):
        schema.downgrade(engine, revision, lock_dir=tmp_path)
        assert schema.current(engine) == revision
        assert _snapshot(engine) == upward[revision], revision
    schema.downgrade(engine, "base", lock_dir=tmp_path)
    assert schema.current(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    schema.upgrade(engine, lock_dir=tmp_path)
    assert _snapshot(engine) == upward[chain[-1]]
    assert _differences(engine) == []
    engine.dispose()


def _restore(database_url: str, dump: str) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            connection.executescript(dump)
        return
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(dump.encode())  # several statements, no parameters: the simple protocol


def _legacy_dump(database_url: str) -> str:
    kind = "sqlite" if database_url.startswith("sqlite") else "postgres"
    return (LEGACY / f"four-heads.{kind}.sql").read_text()


def _gateway(database_url: str, tmp_path: Path, make_settings: Callable[..., Settings]) -> Gateway:
    gateway = Gateway.build(make_settings(DATABASE_URL=database_url, DATA_DIR=str(tmp_path)))
    schema.upgrade(gateway.engine, lock_dir=tmp_path)
    gateway.registry.load()
    return gateway


def test_a_database_made_by_the_four_heads_moves_onto_the_chain(
    database_url: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    _restore(database_url, _legacy_dump(database_url))
    engine = _engine(database_url)
    assert _versions(engine) == ["0002_audit", "0002_oauth", "0004_api_keys", "0005_admin_lock"]
    with pytest.raises(StoreError, match="records 4 revisions"):
        schema.current(engine)
    schema.upgrade(engine, lock_dir=tmp_path)
    assert _versions(engine) == [schema.head()]  # one row: `upgrade head` and `revision` work again
    assert _differences(engine) == []
    # The data is untouched and usable: the fixture's people sign in, and its admin lock guards again.
    gateway = _gateway(database_url, tmp_path, make_settings)
    signed = gateway.accounts.signin("ada@example.com", FIXTURE_PASSWORD, ClientInfo("127.0.0.1", "pytest"))
    assert signed.user.role == "admin"
    bob = gateway.accounts.find_by_email("bob@example.com")
    assert bob is not None
    admin = UserState.from_row(gateway.accounts.get_user(signed.user.id))
    with pytest.raises(Exception, match="last administrator"):
        gateway.accounts.update_user(admin, admin.id, UserChanges(role="user"))
    assert len(gateway.api_keys.list_keys(admin.id)) == 1
    gateway.engine.dispose()
    engine.dispose()


def test_the_admin_lock_row_a_downgrade_removed_is_restored(database_url: str, tmp_path: Path) -> None:
    """The old `downgrade -1` undid 0005_admin_lock and deleted its row: the new chain re-applies it."""
    dump = _legacy_dump(database_url)
    dump = re.sub(r"INSERT INTO (public\.)?alembic_version VALUES ?\('0005_admin_lock'\);\n", "", dump)
    dump = re.sub(r"INSERT INTO (public\.)?app_state VALUES ?\('admin_lock', ?''\);\n", "", dump)
    assert "admin_lock" not in dump
    _restore(database_url, dump)
    engine = _engine(database_url)
    schema.upgrade(engine, lock_dir=tmp_path)
    assert _versions(engine) == [schema.head()]
    with engine.connect() as connection:
        keys = set(connection.execute(text("SELECT key FROM app_state")).scalars())
    assert keys == {"admin_lock", "first_admin"}
    engine.dispose()


def test_a_legacy_record_with_a_gap_is_refused_not_guessed(database_url: str, tmp_path: Path) -> None:
    dump = re.sub(
        r"INSERT INTO (public\.)?alembic_version VALUES ?\('0002_oauth'\);\n", "", _legacy_dump(database_url)
    )
    _restore(database_url, dump)
    engine = _engine(database_url)
    with pytest.raises(StoreError, match="do not follow one another"):
        schema.upgrade(engine, lock_dir=tmp_path)
    assert len(_versions(engine)) == 3  # nothing was changed
    engine.dispose()


def test_a_database_from_a_newer_wardgate_is_refused_with_a_message(
    database_url: str, tmp_path: Path
) -> None:
    engine = _engine(database_url)
    schema.upgrade(engine, lock_dir=tmp_path)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(StoreError, match="0099"):
        schema.upgrade(engine, lock_dir=tmp_path)
    engine.dispose()


def test_admin_changes_are_refused_when_the_admin_lock_row_is_missing(
    database_url: str, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Without its row the lock serialises nothing: the change must fail loudly, not run unguarded."""
    gateway = _gateway(database_url, tmp_path, make_settings)
    first = gateway.accounts.create_user("Ada", "ada@example.com", FIXTURE_PASSWORD, role=None)
    second = gateway.accounts.create_user("Eve", "eve@example.com", FIXTURE_PASSWORD, role="admin")
    with gateway.engine.begin() as connection:
        connection.execute(text("DELETE FROM app_state WHERE key = 'admin_lock'"))
    for change in (UserChanges(role="user"), UserChanges(active=False)):
        with pytest.raises(StoreUnavailableError, match="admin_lock"):
            gateway.accounts.update_user(first, second.id, change)
    with pytest.raises(StoreUnavailableError, match="admin_lock"):
        gateway.accounts.delete_user(first, second.id)
    assert gateway.accounts.get_user(second.id).role == "admin"
    gateway.engine.dispose()


def test_0008_keeps_one_identity_per_account_and_issuer_and_proves_none(database_url: str) -> None:
    """Before 0008 a race could bind two identities of one issuer to an account, and stored addresses
    were case-folded (so no stored row is proof of an address any more)."""
    engine = _engine(database_url)
    schema.upgrade(engine, revision="0007")
    rows = [("i0", "I", "s1", 5), ("i1", "I", "s2", 3), ("i2", "I", "s3", 3), ("i3", "J", "s1", 9)]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, name, role, active, session_stamp, profile_image_url,"
                " created_at, updated_at) VALUES ('u', 'a@example.test', 'A', 'user', true, 's', '/u', 0, 0)"
            )
        )
        for row_id, issuer, subject, at in rows:
            conn.execute(
                text(
                    "INSERT INTO oauth_identities (id, provider, issuer, subject, user_id, email,"
                    " email_verified, created_at, last_login_at)"
                    " VALUES (:id, 'oidc', :issuer, :subject, 'u', 'a@example.test', true, :at, 0)"
                ),
                {"id": row_id, "issuer": issuer, "subject": subject, "at": at},
            )
    schema.upgrade(engine)
    with engine.begin() as conn:
        kept = conn.execute(text("SELECT id, email_verified FROM oauth_identities ORDER BY id")).all()
        assert [(row_id, bool(verified)) for row_id, verified in kept] == [("i1", False), ("i3", False)]
        with pytest.raises(IntegrityError):
            conn.execute(
                text(
                    "INSERT INTO oauth_identities (id, provider, issuer, subject, user_id, email,"
                    " email_verified, created_at, last_login_at)"
                    " VALUES ('i4', 'oidc', 'I', 's4', 'u', NULL, false, 10, 0)"
                )
            )
    engine.dispose()
