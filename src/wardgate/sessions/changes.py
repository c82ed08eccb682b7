"""The change log: what every instance's revocation view must apply, written with the change itself.

Each write that can end a session appends a row to `auth_changes` in the same transaction as the
change, so the log can never disagree with the data: other instances (and the command line) apply it
by polling the log, sooner when the change channel tells them to (`sync`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy.orm import Session

from wardgate.storage.models import AuthChange

USER = "user"  # reload this user (role, status, stamp, groups; or gone)
SESSION = "session"  # this session is revoked
API_KEY = "api_key"  # reload this API key (created, or revoked when its row is gone)


def log_user_change(db: Session, user_ids: Iterable[str]) -> None:
    """Append "reload these users" (inside the caller's transaction)."""
    now = int(time.time())
    db.add_all(AuthChange(at=now, kind=USER, user_id=uid) for uid in user_ids)


def log_session_revoked(db: Session, user_id: str, session_id: str, expires_at: int | None) -> None:
    """Append "this session is revoked" (inside the caller's transaction)."""
    db.add(
        AuthChange(
            at=int(time.time()), kind=SESSION, user_id=user_id, session_id=session_id, expires_at=expires_at
        )
    )


def log_api_key_change(db: Session, user_id: str, key_id: str) -> None:
    """Append "reload this API key" (inside the caller's transaction). Its id travels in `key_id`.

    Also in `session_id`, where the release before migration 0006 reads it: during a rolling upgrade
    instances of both releases share the log, and neither may miss a revoked key. A later release,
    once no older instance can be running, stops writing it.
    """
    db.add(AuthChange(at=int(time.time()), kind=API_KEY, user_id=user_id, key_id=key_id, session_id=key_id))


def changed_key(change: AuthChange) -> str | None:
    """The API key an entry is about (written by this release in `key_id`, by the one before 0006
    in `session_id`)."""
    if change.kind != API_KEY:
        return None
    return change.key_id or change.session_id
