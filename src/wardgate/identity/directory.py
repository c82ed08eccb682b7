"""Reading who there is: accounts and a person's sessions, a bounded page at a time.

Every list walks an index from where the last page ended (`wardgate.storage.paging`), so the
thousandth page of a hundred thousand accounts costs what the first does. Searching matches the
beginning of an address or of a name, case-insensitively: one index range each (migration 0009),
where matching anywhere inside would read every account on every search.
"""

from __future__ import annotations

import time

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from wardgate.identity import session_rows
from wardgate.storage.models import AuthSession, OAuthIdentity, User
from wardgate.storage.paging import Order, Page, fetch_page

USERS_ORDER = Order(User.created_at, User.id, ascending=True)  # oldest first, as Open WebUI lists them
SESSIONS_ORDER = Order(AuthSession.created_at, AuthSession.id)  # newest first


class Directory:
    """Read-only queries over accounts and sessions, in pages."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def users(
        self,
        *,
        query: str = "",
        role: str | None = None,
        cursor: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[User]:
        """Accounts, oldest first: those whose address or name begins with `query` (any case), of
        `role` when given; after `cursor`, or from `offset` for a numbered page."""
        conditions: list[ColumnElement[bool]] = []
        if query:
            with self._sessions() as db:
                postgres = db.get_bind().dialect.name == "postgresql"
            conditions.append(_begins_with(query.lower(), postgres))
        if role is not None:
            conditions.append(User.role == role)
        with self._sessions() as db:
            return fetch_page(db, User, conditions, USERS_ORDER, cursor=cursor, offset=offset, limit=limit)

    def sessions_of(self, user_id: str, *, cursor: str | None = None, limit: int = 50) -> Page[AuthSession]:
        """A person's live sessions, newest first (by ix_auth_sessions_user_created)."""
        conditions = [
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            session_rows.unexpired(int(time.time())),
        ]
        with self._sessions() as db:
            return fetch_page(db, AuthSession, conditions, SESSIONS_ORDER, cursor=cursor, limit=limit)

    def identities_of(self, user_id: str) -> list[OAuthIdentity]:
        """The sign-in provider identities linked to a person (one per issuer), oldest first."""
        with self._sessions() as db:
            query = select(OAuthIdentity).where(OAuthIdentity.user_id == user_id)
            return list(db.scalars(query.order_by(OAuthIdentity.created_at)))


def _begins_with(prefix: str, postgres: bool) -> ColumnElement[bool]:
    """Address or lower-cased name beginning with `prefix`, as index ranges [prefix, successor).
    In byte (code point) order every string with the prefix lies in that range and no other does;
    PostgreSQL is asked for that order explicitly (the "C" collation of ix_users_*_prefix). The
    databases lower-case ASCII only (SQLite always; PostgreSQL in the "C" locale), so a name that
    begins with a capital outside ASCII ("Élodie") is looked for with that capital too."""
    email: ColumnElement[str] = User.email.expression
    name: ColumnElement[str] = func.lower(User.name)
    if postgres:
        email, name = email.collate("C"), name.collate("C")
    ranges = [_range(email, prefix), _range(name, prefix)]
    capital = prefix[:1].upper() + prefix[1:]
    if not prefix[:1].isascii() and capital != prefix:
        ranges.append(_range(name, capital))
    return or_(*ranges)


def _range(column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    successor = _successor(prefix)
    if successor is None:  # only U+10FFFF: nothing follows it, the prefix test is exact
        return and_(column >= prefix, column.startswith(prefix, autoescape=True))
    return and_(column >= prefix, column < successor)


def _successor(prefix: str) -> str | None:
    """The least string greater than every string beginning with `prefix` (code point order);
    surrogates, which no text holds, are stepped over."""
    kept = prefix.rstrip("\U0010ffff")
    if not kept:
        return None
    last = ord(kept[-1]) + 1
    return kept[:-1] + chr(0xE000 if 0xD800 <= last <= 0xDFFF else last)
