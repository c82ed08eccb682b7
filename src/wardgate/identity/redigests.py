"""API keys found under an earlier secret's digest, stored again under the current secret's.

After a rotation of `WEBUI_SECRET_KEY`, a key presented under a fallback's digest (or one stored
before key ids were recorded) is noted here on the request's path — a dict write, no I/O — and
the batched writes store it under the current digest: `UPDATE ... WHERE key_hash = <the digest it
was found under>`, so a write that lost a race with a revocation or another re-digest changes
nothing, with a change-log entry in the same transaction so that every instance reloads the key
(`wardgate.sessions.changes`). Once every key in use has moved, the fallback can go.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.sessions.changes import log_api_key_change
from wardgate.sessions.records import ApiKeyState
from wardgate.sessions.registry import SessionRegistry
from wardgate.storage.models import ApiKey

log = logging.getLogger(__name__)


class PendingRedigests:
    """Keys waiting to be stored under the current secret's digest, at most one entry per key."""

    def __init__(self, sessions: sessionmaker[Session], registry: SessionRegistry, current_id: str) -> None:
        self._sessions = sessions
        self._registry = registry
        self._current_id = current_id
        self._pending: dict[str, tuple[ApiKeyState, str]] = {}  # key id -> (key as found, new digest)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pending)

    def note(self, key: ApiKeyState, digest: str) -> None:
        """`key` was found under another digest than `digest`, the current secret's (or without the
        current key id)."""
        with self._lock:
            self._pending[key.id] = (key, digest)

    def flush(self) -> None:
        """Store what is noted, in one transaction (rows in id order, as other writers lock them); a
        failure is logged, and the next use of each key notes it again."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        moved: list[tuple[ApiKeyState, str]] = []
        try:
            with self._sessions() as db, db.begin():
                for key_id, (key, digest) in sorted(pending.items()):
                    result = db.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id, ApiKey.key_hash == key.digest)
                        .values(key_hash=digest, key_id=self._current_id)
                    )
                    if result.rowcount == 1:  # type: ignore[attr-defined]
                        log_api_key_change(db, key.user_id, key_id)
                        moved.append((replace(key, digest=digest, key_id=self._current_id), key.digest))
        except SQLAlchemyError as exc:
            log.warning("API keys not re-digested (%s); again at their next use", type(exc).__name__)
            return
        for key, old_digest in moved:
            self._registry.api_key_redigested(key, old_digest)
