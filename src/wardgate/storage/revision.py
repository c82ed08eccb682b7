"""The database's schema revision, read with one query and no Alembic.

Every start must bring the schema to the newest migration; nearly always it is there already. This
module answers "is it?" from the `alembic_version` table and the migration files' names, so that
Alembic (11 MB and 100 ms of imports, measured) is loaded only when there is something to migrate.
The chain's convention makes that possible: each file is named after its revision id (`0013_….py`
holds revision "0013"), the ids count up, and the newest is the head; `tests/storage` checks the
convention against Alembic's own view of the chain.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, inspect, text

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION_FILE = re.compile(r"(\d{4})_\w+\.py")


def newest() -> str:
    """The newest revision of the chain, from the migration files' names."""
    found = [m.group(1) for p in VERSIONS.iterdir() if (m := _REVISION_FILE.fullmatch(p.name))]
    return max(found)


def at_newest(engine: Engine) -> bool:
    """True when the database records exactly the newest revision (nothing to migrate)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        recorded = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
    return recorded == [newest()]
