"""Session rows of one account: the bounds on how many it may hold, and its live ones in pages.

Functions over an open transaction, so that the caller commits a new session, the ones it ends and
their change-log entries together.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from wardgate.errors import RateLimitedError
from wardgate.sessions.changes import log_session_revoked
from wardgate.storage.models import AuthSession, OAuthToken

ENDED_PER_LIVE = 10  # ended-but-unexpired sessions an account may have, per allowed live one
TOO_MANY_ENDED = "Too many sessions of this account were started and ended recently. Try again later."


def unexpired(now: int) -> ColumnElement[bool]:
    return or_(AuthSession.expires_at.is_(None), AuthSession.expires_at > now)


def refuse_past_ended_bound(db: Session, user_id: str, cap: int, now: int) -> None:
    """Refuse a new session while `ENDED_PER_LIVE` times `cap` ended ones still await their expiry
    (each keeps a row until then, so that the revocation outlives a restart)."""
    ended = db.scalar(
        select(func.count())
        .select_from(AuthSession)
        .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_not(None), unexpired(now))
    )
    if (ended or 0) >= cap * ENDED_PER_LIVE:
        raise RateLimitedError(TOO_MANY_ENDED, retry_after=3600, code="too_many_sessions")


def end_surplus(db: Session, user_id: str, new_id: str, cap: int, now: int) -> list[tuple[str, int | None]]:
    """End the live sessions beyond `cap`, counting the new one: the oldest (to the second) first.
    Returns the ended ones' ids and expiry times, each already in the change log."""
    surplus = [
        (session_id, expires_at)
        for session_id, expires_at in db.execute(
            select(AuthSession.id, AuthSession.expires_at)
            .where(
                AuthSession.user_id == user_id,
                AuthSession.id != new_id,
                AuthSession.revoked_at.is_(None),
                unexpired(now),
            )
            .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
            .offset(cap - 1)
        )
    ]
    if surplus:
        ended_ids = [session_id for session_id, _ in surplus]
        db.execute(update(AuthSession).where(AuthSession.id.in_(ended_ids)).values(revoked_at=now))
        db.execute(delete(OAuthToken).where(OAuthToken.session_id.in_(ended_ids)))
        for session_id, expires_at in surplus:
            log_session_revoked(db, user_id, session_id, expires_at)
    return surplus
