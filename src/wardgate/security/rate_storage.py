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
the window, and whatever has left every window is deleted as it is passed and in sweeps. A hit
costs the same whatever the limit: the number of entries per key is kept in `entry_counts`, and
only the entries that just left the window are touched (an index range), never the whole window.
"""

from __future__ import annotations

import os
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
    # How many entries each key holds (all inside its window: older ones are deleted as they are
    # passed), so that a hit reads one row instead of counting a window of a large limit.
    "CREATE TABLE IF NOT EXISTS entry_counts (key TEXT PRIMARY KEY, n INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters "
    "(key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)",
)
_SWEEP_EVERY = 60.0  # seconds between deletions of every expired row


class SqliteRateStorage(Storage, MovingWindowSupport):
    """Moving-window (and fixed-window) counters in an SQLite file, exact across processes."""

    STORAGE_SCHEME = ["wardgate+sqlite"]

    def __init__(self, path: Path, *, wrap_exceptions: bool = False) -> None:
        super().__init__(wrap_exceptions=wrap_exceptions)
        # The file holds addresses and account names (bucket keys): readable by this user only.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # One connection per process, used under a lock (calls come from worker threads); the
        # transactions are explicit (isolation_level=None: no implicit BEGIN from the module).
        self._db = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
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
            inside = _inside(db, key, now - expiry)
            if inside + amount > limit:
                return False
            db.executemany(
                "INSERT INTO entries (key, at, expires) VALUES (?, ?, ?)", [(key, now, now + expiry)] * amount
            )
            db.execute(
                "INSERT INTO entry_counts (key, n) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET n = n + excluded.n",
                (key, amount),
            )
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest entry inside the window (or now) and how many there are."""
        with self._transaction() as db:
            now = time.time()
            inside = _inside(db, key, now - expiry)
            (oldest,) = db.execute("SELECT min(at) FROM entries WHERE key = ?", (key,)).fetchone()
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
            db.execute("DELETE FROM entry_counts WHERE key = ?", (key,))
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
            db.execute("DELETE FROM entry_counts")
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
                    _sweep(self._db, now)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def _inside(db: sqlite3.Connection, key: str, window_start: float) -> int:
    """How many entries `key` holds inside the window, after deleting those that left it (a range
    of the (key, at) index: the cost is what is deleted, not what is kept)."""
    passed = db.execute("DELETE FROM entries WHERE key = ? AND at < ?", (key, window_start)).rowcount
    if passed:
        db.execute("UPDATE entry_counts SET n = n - ? WHERE key = ?", (passed, key))
    row = db.execute("SELECT n FROM entry_counts WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


def _sweep(db: sqlite3.Connection, now: float) -> None:
    """Delete every expired entry and counter (keys no longer hit), keeping the counts right."""
    for key, passed in db.execute(
        "SELECT key, count(*) FROM entries WHERE expires <= ? GROUP BY key", (now,)
    ).fetchall():
        db.execute("UPDATE entry_counts SET n = n - ? WHERE key = ?", (passed, key))
    db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
    db.execute("DELETE FROM entry_counts WHERE n <= 0")
    db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
