"""`SqliteRateStorage`: a `limits` storage in a small SQLite file, shared by the worker processes of
one machine (`UVICORN_WORKERS` without Redis).

The counting stays the `limits` library's: its moving-window strategy asks the storage to
`acquire_entry` (take `amount` entries unless `limit` are already inside the window) and for the
`get_moving_window`. This class answers those two questions exactly as `limits`' own MemoryStorage
does, with the file instead of a dict, and each answer in one `BEGIN IMMEDIATE` transaction: SQLite
lets one writer at a time through, so two workers can never both take the last entry. The fixed-
window operations (`incr`, `get`, `get_expiry`) complete the storage interface.

The file lives in `DATA_DIR` (never on a network file system: SQLite's locks need a local one).
Rows are bounded: an entry is written only when admitted, so a key holds at most its limit inside
the window, and whatever has left every window is deleted as it is passed and in sweeps.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from limits.storage import Storage
from limits.storage.base import MovingWindowSupport

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS entries_by_key ON entries (key, at)",
    "CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires)",
    "CREATE TABLE IF NOT EXISTS counters "
    "(key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)",
)
_SWEEP_EVERY = 60.0  # seconds between deletions of every expired row


class SqliteRateStorage(Storage, MovingWindowSupport):
    """Moving-window (and fixed-window) counters in an SQLite file, exact across processes."""

    STORAGE_SCHEME = ["wardgate+sqlite"]

    def __init__(self, path: Path, *, wrap_exceptions: bool = False) -> None:
        super().__init__(wrap_exceptions=wrap_exceptions)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per process, used under a lock (calls come from worker threads); the
        # transactions are explicit (isolation_level=None: no implicit BEGIN from the module).
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)

    @property
    def base_exceptions(self) -> type[Exception]:
        """What `wrap_exceptions` turns into `limits.errors.StorageError`."""
        return sqlite3.Error

    # --- the moving window --------------------------------------------------------------------------

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Take `amount` entries unless the window already holds more than `limit - amount`."""
        if amount > limit:
            return False
        with self._transaction() as db:
            now = time.time()
            db.execute("DELETE FROM entries WHERE key = ? AND expires <= ?", (key, now))
            (inside,) = db.execute(
                "SELECT count(*) FROM entries WHERE key = ? AND at >= ?", (key, now - expiry)
            ).fetchone()
            if inside + amount > limit:
                return False
            db.executemany(
                "INSERT INTO entries (key, at, expires) VALUES (?, ?, ?)", [(key, now, now + expiry)] * amount
            )
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest entry inside the window (or now) and how many there are."""
        now = time.time()
        with self._lock:
            oldest, inside = self._db.execute(
                "SELECT min(at), count(*) FROM entries WHERE key = ? AND at >= ?", (key, now - expiry)
            ).fetchone()
        return (oldest if oldest is not None else now), inside

    # --- fixed windows and the rest of the interface ------------------------------------------------

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the counter of `key`, starting it (for `expiry` seconds) when absent."""
        with self._transaction() as db:
            now = time.time()
            db.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            db.execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (key, amount, now + expiry),
            )
            (value,) = db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
        return int(value)

    def get(self, key: str) -> int:
        """The counter of `key` (0 when absent or expired)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE key = ? AND expires > ?", (key, time.time())
            ).fetchone()
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When the counter of `key` ends (now when absent)."""
        with self._lock:
            row = self._db.execute("SELECT expires FROM counters WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row else time.time()

    def clear(self, key: str) -> None:
        """Forget every entry and counter of `key`."""
        with self._transaction() as db:
            db.execute("DELETE FROM entries WHERE key = ?", (key,))
            db.execute("DELETE FROM counters WHERE key = ?", (key,))

    def check(self) -> bool:
        """The file answers."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()
        return True

    def reset(self) -> int | None:
        """Forget everything; the number of rows removed."""
        with self._transaction() as db:
            removed = db.execute("DELETE FROM entries").rowcount + db.execute("DELETE FROM counters").rowcount
        return removed

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    # --- transactions -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """This process's lock, then SQLite's write lock (`BEGIN IMMEDIATE`); committed at the end
        (with a sweep of expired rows now and then) or rolled back on an error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                now = time.time()
                if now >= self._next_sweep:
                    self._next_sweep = now + _SWEEP_EVERY
                    self._db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
                    self._db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
