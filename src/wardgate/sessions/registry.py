"""The revocation view: who may be signed in, held in memory so a request check costs no I/O.

The database is the truth. Each process keeps a view of it — every user's role, status and session
stamp, and the revoked sessions that have not expired yet — loaded at start, updated on every local
write, and refreshed from the `auth_changes` log that every instance (and the CLI) appends to in the
same transaction as the change itself (`changes`). `ViewSync` keeps it in step: a poll of that log is
the safety net that needs no other service; the change channel only makes the same refresh sooner.

Fail closed: when the view has not synchronised for `stale_after` seconds, a request is checked
against the database instead, and if the database cannot answer either, it is refused.

API keys live in the same view (digest -> `ApiKeyState`), kept coherent the same way: a change log
entry of kind "api_key" names a key to reload, and a key is live only while its owner is active and
still has the session stamp the key was created under ("sign out everywhere" ends keys too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import AuthenticationError, StoreUnavailableError
from wardgate.observability import metrics
from wardgate.security.tokens import Claims
from wardgate.sessions import changes
from wardgate.sessions.records import SESSION_ENDED, ApiKeyState, UserState
from wardgate.sessions.view import SessionView
from wardgate.storage.models import ApiKey, AuthChange, AuthSession, User, UserGroup
from wardgate.storage.retention import prune_before

log = logging.getLogger(__name__)
_LOOKUPS = 3  # lock-free tries at a key while changes race them, before taking the lock
_OVERLAP_ROWS = 1000  # ids can commit out of order; re-read this many below the highest seen
_CHANGE_LOG_RETENTION = 86400
_EXPIRED_SESSION_GRACE = 300  # seconds past a session's expiry before its row is deleted
LAST_SEEN_INTERVAL = 60.0  # seconds: how often "last seen" times are written (at most)
MAX_PENDING_TOUCHES = 100_000  # sessions whose "last seen" waits for the next write (~20 MB at most)
FLUSH_CHUNK = 1_000  # rows per statement and transaction when flushing


def load_groups(db: Session, user_ids: Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
    """Users' groups (from single sign-on claims), for all users or the given ones."""
    query = select(UserGroup.user_id, UserGroup.name).order_by(UserGroup.user_id, UserGroup.name)
    if user_ids is not None:
        query = query.where(UserGroup.user_id.in_(list(user_ids)))
    groups: dict[str, list[str]] = {}
    for user_id, name in db.execute(query):
        groups.setdefault(user_id, []).append(name)
    return {user_id: tuple(names) for user_id, names in groups.items()}


@dataclass(slots=True)
class _Touch:
    at: int
    user_id: str
    ip: str | None


class SessionRegistry:
    """Owns the view and keeps it coherent with the database; also batches "last seen" writes."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        stale_after: float,
        publish: Callable[[], None],
        token_lifetime: timedelta | None = None,
    ) -> None:
        self._sessions = sessions
        lifetime = int(token_lifetime.total_seconds()) if token_lifetime is not None else None
        self.view = SessionView(token_lifetime=lifetime)
        self.stale_after = stale_after
        self._publish = publish  # tells the other instances after each local change (a change channel)
        self._cursor = 0
        self._seen: deque[int] = deque(maxlen=4 * _OVERLAP_ROWS)
        self._seen_set: set[int] = set()
        self._touches: dict[str, _Touch] = {}
        self._dropped_touches = 0
        self._touches_written = time.monotonic()
        self._touch_lock = threading.Lock()
        self._key_touches: dict[str, int] = {}  # API key id -> last used
        self._lock = threading.Lock()  # the view's contents
        # One sync at a time, reads and apply together: two overlapping syncs (the poll and a notice)
        # could otherwise apply an older read after a newer one had marked its entries as seen.
        self._sync_lock = threading.Lock()
        self._generation = 0  # bumped by every change to the view; see check_in_database
        self.trusted = True
        """False while the change channel is down: the view may have missed changes (set by ViewSync)."""

    # --- loading and synchronising ---------------------------------------------------------

    def load(self) -> None:
        """Build the view from the database (at start)."""
        now = int(time.time())
        with self._sessions() as db:
            cursor = db.scalar(select(func.max(AuthChange.id))) or 0
            groups = load_groups(db)
            users = {
                row.id: UserState.from_row(row, groups.get(row.id, ())) for row in db.scalars(select(User))
            }
            revoked = _live_revocations(db, now)
            keys = [ApiKeyState.from_row(row) for row in db.scalars(select(ApiKey))]
        with self._lock:
            self.view.users = users
            self.view.emails = {user.email: user.id for user in users.values()}
            self.view.revoked = revoked
            self.view.api_key_writes += 1
            self.view.api_keys = {key.digest: key for key in keys}
            self.view.api_key_ids = {key.id: key.digest for key in keys}
            self.view.api_key_writes += 1
            self._cursor = max(0, cursor - _OVERLAP_ROWS)
            self.view.synced_at = time.monotonic()

    def sync(self) -> int:
        """Apply changes logged since the last sync (by any instance); return how many were new."""
        with self._sync_lock:
            return self._sync()

    def _sync(self) -> int:
        with self._sessions() as db:
            entries = list(
                db.scalars(select(AuthChange).where(AuthChange.id > self._cursor).order_by(AuthChange.id))
            )
            fresh = [c for c in entries if c.id not in self._seen_set]
            user_ids = {c.user_id for c in fresh if c.kind == changes.USER}
            groups = load_groups(db, user_ids) if user_ids else {}
            rows = (
                {
                    r.id: UserState.from_row(r, groups.get(r.id, ()))
                    for r in db.scalars(select(User).where(User.id.in_(user_ids)))
                }
                if user_ids
                else {}
            )
            key_ids = {key for key in map(changes.changed_key, fresh) if key}
            keys = (
                {r.id: r for r in db.scalars(select(ApiKey).where(ApiKey.id.in_(key_ids)))} if key_ids else {}
            )
        now = time.time()
        with self._lock:
            self._generation += 1
            for change in fresh:
                self._apply(change, rows, keys)
                self._remember(change.id)
                metrics.observe_revocation_lag(max(0.0, now - change.at))  # `at`: whole seconds
            if entries:
                self._cursor = max(self._cursor, entries[-1].id - _OVERLAP_ROWS)
            self.view.synced_at = time.monotonic()
        return len(fresh)

    def _apply(self, change: AuthChange, rows: dict[str, UserState], keys: dict[str, ApiKey]) -> None:
        if change.kind == changes.SESSION and change.session_id:
            self.view.revoke(change.session_id, change.expires_at)
        elif (key_id := changes.changed_key(change)) is not None:
            key = keys.get(key_id)
            if key is None:
                self.view.drop_api_key(key_id)
            else:
                self.view.put_api_key(ApiKeyState.from_row(key))
        elif change.kind == changes.USER:
            row = rows.get(change.user_id)
            if row is None:
                self.view.drop_user(change.user_id)
            else:
                self.view.put_user(row)

    def _remember(self, change_id: int) -> None:
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(change_id)
        self._seen_set.add(change_id)

    @property
    def is_stale(self) -> bool:
        """True when the view may have missed a change and must not be trusted alone."""
        return not self.trusted or time.monotonic() - self.view.synced_at > self.stale_after

    # --- checking ----------------------------------------------------------------------------

    def check(self, claims: Claims) -> UserState | None:
        """Check claims against the view (pure memory); None: ask `check_in_database`."""
        return self.view.check(claims)

    def check_in_database(self, claims: Claims) -> UserState:
        """The slow path when the view is stale: ask the database, refuse if it cannot answer."""
        generation = self._generation
        try:
            with self._sessions() as db:
                row = db.get(User, claims.user_id)
                session = db.get(AuthSession, claims.session_id)
                state = (
                    UserState.from_row(row, load_groups(db, [row.id]).get(row.id, ()))
                    if row is not None
                    else None
                )
                revoked = session is None or session.revoked_at is not None
        except SQLAlchemyError as exc:
            raise StoreUnavailableError("database unavailable for the session check") from exc
        if revoked or state is None or not state.active or state.session_stamp != claims.session_stamp:
            raise AuthenticationError(SESSION_ENDED, code="session_revoked")
        with self._lock:
            if self._generation == generation:  # else the view took a newer change while we read
                self.view.put_user(state)  # the database is newer than the view: remember it
        return state

    def user_by_email_in_database(self, email: str) -> UserState | None:
        """The slow path of `SessionView.user_by_email` while the view is stale: the database
        answers, StoreUnavailableError when it cannot (fail closed)."""
        try:
            with self._sessions() as db:
                row = db.scalar(select(User).where(User.email == email))
                return UserState.from_row(row, load_groups(db, [row.id]).get(row.id, ())) if row else None
        except SQLAlchemyError as exc:
            raise StoreUnavailableError("database unavailable for the person a service key acts for") from exc

    # --- local writes (called after the transaction committed) -------------------------------

    def user_changed(self, user: UserState) -> None:
        """A local write changed this user."""
        with self._lock:
            self._generation += 1
            self.view.put_user(user)
        self._notify()

    def user_reloaded(self, user_id: str) -> UserState | None:
        """Read a user another service changed (with its change-log entry) and put it in the view,
        unless the view took a newer change meanwhile (then that one, or the sync, is newer than
        what was read: an older snapshot must never replace it)."""
        generation = self._generation
        with self._sessions() as db:
            row = db.get(User, user_id)
            state = UserState.from_row(row, load_groups(db, [user_id]).get(user_id, ())) if row else None
        if state is not None:
            with self._lock:
                if self._generation == generation:
                    self._generation += 1
                    self.view.put_user(state)
            self._notify()
        return state

    def user_deleted(self, user_id: str) -> None:
        """A local write deleted this user."""
        with self._lock:
            self._generation += 1
            self.view.drop_user(user_id)
        self._notify()

    def session_revoked(self, session_id: str, expires_at: int | None) -> None:
        """A local write revoked this session."""
        with self._lock:
            self.view.revoke(session_id, expires_at)
        self._notify()

    def api_key_changed(self, key_id: str, key: ApiKeyState | None) -> None:
        """A local write created (`key`) or revoked (None) this API key."""
        with self._lock:
            if key is None:
                self.view.drop_api_key(key_id)
            else:
                self.view.put_api_key(key)
        self._notify()

    def find_api_key(self, digests: Sequence[str]) -> ApiKeyState | None:
        """The key under the first of these digests (one presented key under each secret) that the
        view holds. A change can move a key between two of the digests (a re-digest here or on
        another instance): a lookup that missed the new entry just before the move and the old one
        just after it must not refuse a valid key (`_without_racing`)."""
        view = self.view
        return self._without_racing(lambda: next(filter(None, map(view.api_keys.get, digests)), None))

    def api_key_by_id(self, key_id: str) -> ApiKeyState | None:
        """The key with this id as the view holds it now (its digest may have changed since)."""
        return self._without_racing(lambda: self.view.api_key_by_id(key_id))

    def _without_racing(self, lookup: Callable[[], ApiKeyState | None]) -> ApiKeyState | None:
        """`lookup` of the view's keys; a miss counts only when no key change was under way or began
        meanwhile (`SessionView.api_key_writes`, a sequence lock: no lock is taken, so a flood of
        unknown keys never waits for a writer). A miss that keeps racing changes looks once more
        under the lock every change holds."""
        view = self.view
        for _ in range(_LOOKUPS):
            before = view.api_key_writes
            found = lookup()
            if found is not None or (before % 2 == 0 and view.api_key_writes == before):
                return found
        with self._lock:
            return lookup()

    def api_key_redigested(self, key: ApiKeyState, old_digest: str) -> None:
        """A local write moved this key to a new digest: put it only if the view still holds it
        under the old one. A revocation (or another change) that reached the view meanwhile wins;
        putting the key back unconditionally would admit a revoked key until the next restart."""
        with self._lock:
            if self.view.api_key_ids.get(key.id) == old_digest:
                self.view.put_api_key(key)
        self._notify()

    def _notify(self) -> None:
        self._publish()

    # --- "last seen", batched off the hot path ---------------------------------------------

    def touch(self, session_id: str, user_id: str, ip: str | None) -> None:
        """Note that a session was used now (written to the database by `flush_touches`). At most
        `MAX_PENDING_TOUCHES` sessions per interval: past that, uses of further sessions go unrecorded
        until the next flush (memory stays bounded; "last seen" is a hint, never a security check)."""
        with self._touch_lock:  # the flush swaps the dict in a worker thread
            touches = self._touches
            if len(touches) >= MAX_PENDING_TOUCHES and session_id not in touches:
                self._dropped_touches += 1
                return
            touches[session_id] = _Touch(int(time.time()), user_id, ip)

    def touch_api_key(self, key_id: str) -> None:
        """Note that an API key was used now (written by `flush_touches`, never per request)."""
        self._key_touches[key_id] = int(time.time())

    def prune_sessions(self, now: int, stopping: threading.Event) -> int:
        """Delete the rows of sessions whose tokens have expired (revoked or not: nothing can use
        them any more), in bounded batches; their provider tokens go with them (foreign key)."""
        cutoff = now - _EXPIRED_SESSION_GRACE
        return prune_before(self._sessions, AuthSession.expires_at, cutoff, stopping=stopping)

    def flush_touches(self, *, due_only: bool = False) -> None:
        """Write the batched "last seen" times: one statement per table and chunk, many rows each.

        `due_only` (the batched-writes loop): only once `LAST_SEEN_INTERVAL` has passed since the
        last write, so that each busy session is written once a minute, not once per sync interval
        (at 20,000 active sessions that is the difference between 20,000 rows a minute and ten
        times as many every 2 s, competing with requests for the process and the write lock)."""
        now = time.monotonic()
        if due_only and now - self._touches_written < LAST_SEEN_INTERVAL:
            return
        self._touches_written = now
        with self._touch_lock:
            touches, self._touches = self._touches, {}
            key_touches, self._key_touches = self._key_touches, {}
        if self._dropped_touches:
            log.info(
                "%d session uses not recorded: more than %d sessions in one interval",
                self._dropped_touches,
                MAX_PENDING_TOUCHES,
            )
            self._dropped_touches = 0
        latest: dict[str, int] = {}
        for touch in touches.values():  # a person's last use: the latest of their sessions'
            latest[touch.user_id] = max(touch.at, latest.get(touch.user_id, 0))
        users = sorted(latest.items())
        sessions = sorted(touches.items())
        # Each chunk locks rows in the order every other writer uses: the user first, then its API
        # keys and sessions (each sorted, for flushes on other instances). Opposite orders deadlock on
        # PostgreSQL. Chunks keep each transaction (and SQLite's write lock) short.
        for start in range(0, max(len(users), len(sessions), len(key_touches)), FLUSH_CHUNK):
            end = start + FLUSH_CHUNK
            with self._sessions() as session, session.begin():
                db = session.connection()  # Core executemany: one statement, many rows (not ORM bulk)
                if users[start:end]:
                    db.execute(_TOUCH_USER, [{"b_id": uid, "b_at": at} for uid, at in users[start:end]])
                if start == 0 and key_touches:
                    db.execute(
                        _TOUCH_KEY, [{"b_id": kid, "b_at": at} for kid, at in sorted(key_touches.items())]
                    )
                if sessions[start:end]:
                    db.execute(
                        _TOUCH_SESSION,
                        [{"b_id": sid, "b_at": t.at, "b_ip": t.ip} for sid, t in sessions[start:end]],
                    )

    def prune_view(self, now: int, _stopping: threading.Event) -> int:
        """Forget revocations of tokens that have expired anyway (a housekeeping job); return how many."""
        with self._lock:
            before = len(self.view.revoked)
            self.view.prune(now)
            return before - len(self.view.revoked)

    def prune_change_log(self, now: int, stopping: threading.Event) -> int:
        """Delete change-log entries every instance has long applied (a housekeeping job)."""
        return prune_before(self._sessions, AuthChange.at, now - _CHANGE_LOG_RETENTION, stopping=stopping)

    def live_sessions(self, now: int) -> int:
        """Sessions neither ended nor expired, counted in the database (for `/metrics`, read only)."""
        unexpired = func.coalesce(AuthSession.expires_at, now + 1) > now  # no expiry: never expires
        query = select(func.count()).select_from(AuthSession).where(AuthSession.revoked_at.is_(None))
        try:
            with self._sessions() as db:
                return int(db.scalar(query.where(unexpired)) or 0)
        except SQLAlchemyError as exc:
            raise StoreUnavailableError(f"cannot count sessions ({type(exc).__name__})") from None


def _live_revocations(db: Session, now: int) -> dict[str, int | None]:
    """Revoked sessions whose tokens are still valid, by the partial index ix_auth_sessions_revoked_expiry:
    start-up reads what can still be refused, not every revocation ever made."""
    revoked = select(AuthSession.id, AuthSession.expires_at).where(AuthSession.revoked_at.is_not(None))
    expiring = db.execute(revoked.where(AuthSession.expires_at >= now))
    unending = db.execute(revoked.where(AuthSession.expires_at.is_(None)))
    return {session_id: expires_at for session_id, expires_at in (*expiring, *unending)}


_TOUCH_USER = update(User).where(User.id == bindparam("b_id")).values(last_active_at=bindparam("b_at"))
_TOUCH_KEY = update(ApiKey).where(ApiKey.id == bindparam("b_id")).values(last_used_at=bindparam("b_at"))
_TOUCH_SESSION = (
    update(AuthSession)
    .where(AuthSession.id == bindparam("b_id"))
    .values(last_seen_at=bindparam("b_at"), ip=bindparam("b_ip"))
)
