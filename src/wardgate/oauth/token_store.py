"""Provider tokens at rest: encrypted with MultiFernet, one row per wardgate session, never returned.

The access, refresh and ID tokens a provider issues are kept server-side (the browser only ever holds
wardgate's HttpOnly session cookie) so that sign-out can name the ID token (`id_token_hint`) and
later features can call the provider on the user's behalf. They are encrypted with
`OAUTH_SESSION_TOKEN_ENCRYPTION_KEY` — a list of Fernet keys, newest first — then the keys derived
from `WEBUI_SECRET_KEY` and its fallbacks: new rows use the newest, rows under an older key still
decrypt and are re-encrypted as they are read (key rotation, cryptography's MultiFernet). A row that
no key opens is deleted: the tokens are re-issued at the next sign-in, and nothing is ever guessed.

Tokens live no longer than their session. `load` returns them only for a session that is still live
(so sign-out never hands out the `id_token_hint` of a revoked session), and `follow_session_ends`
deletes them in the very transaction that ends the session: every write that can end a session
appends to the change log (`wardgate.sessions.changes`) in its own transaction, whichever service
makes it (sign-out, sign-out everywhere, an administrator's revocation, a password change, a
disabled account), and the listener acts on those entries.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import Delete, delete, event, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from wardgate.security.keys import FernetRing
from wardgate.sessions import changes
from wardgate.storage.models import AuthChange, AuthSession, OAuthToken

log = logging.getLogger(__name__)
MAX_SESSIONS_PER_USER = 10  # Open WebUI's OAUTH_MAX_SESSIONS_PER_USER default; the oldest go first
REFRESH_MARGIN = 300  # refresh when the access token has less than five minutes left
_DEFAULT_LIFETIME = 3600  # when the provider says nothing about expiry (RFC 6749 §5.1: RECOMMENDED)
_MAX_LIFETIME = 10 * 365 * 86400  # seconds: a provider's longer (or infinite) lifetime is this


def _seconds(value: object, now: int = 0) -> int | None:
    """A provider's lifetime in seconds (`expires_in`, or `expires_at` less `now`), held within
    0 to ten years; None when it is no finite number. JSON reads 1e999 as infinity, and 1e300
    has 301 digits: neither fits the database's column or means anything."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):  # (an int of 400 digits is no float)
        return None
    return int(min(max(value - now, 0), _MAX_LIFETIME))


@dataclass(frozen=True, slots=True)
class ProviderTokens:
    """The decrypted tokens of one session."""

    provider: str
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750's token type
    refresh_token: str | None = None
    id_token: str | None = None
    scope: str | None = None
    expires_at: int | None = None

    @classmethod
    def from_response(
        cls, provider: str, token: Mapping[str, Any], previous: ProviderTokens | None = None, *, now: int
    ) -> ProviderTokens:
        """From a token endpoint response (RFC 6749 §5.1); a refresh keeps what it does not replace."""
        lifetime = _seconds(token.get("expires_at"), now) if "expires_at" in token else None
        if lifetime is None:
            lifetime = _seconds(token.get("expires_in"))
        expires_at = now + (_DEFAULT_LIFETIME if lifetime is None else lifetime)
        return cls(
            provider=provider,
            access_token=str(token["access_token"]),
            token_type=str(token.get("token_type") or "Bearer"),
            refresh_token=token.get("refresh_token") or (previous.refresh_token if previous else None),
            id_token=token.get("id_token") or (previous.id_token if previous else None),
            scope=token.get("scope") or (previous.scope if previous else None),
            expires_at=expires_at,
        )

    def needs_refresh(self, now: int) -> bool:
        """True when the access token expires within REFRESH_MARGIN and can be refreshed."""
        return (
            bool(self.refresh_token)
            and self.expires_at is not None
            and self.expires_at - now < REFRESH_MARGIN
        )

    def __repr__(self) -> str:
        """Never show a token (logs, tracebacks)."""
        return f"ProviderTokens(provider={self.provider!r}, expires_at={self.expires_at})"


def token_cipher(keys: Sequence[bytes]) -> FernetRing:
    """MultiFernet over the keys, newest first (encrypts with the first, decrypts with any)."""
    return FernetRing(keys)


class ProviderTokenStore:
    """Encrypted provider tokens by wardgate session id."""

    def __init__(self, sessions: sessionmaker[Session], cipher: FernetRing) -> None:
        self._sessions = sessions
        self._cipher = cipher

    def save(self, session_id: str, user_id: str, tokens: ProviderTokens) -> None:
        """Store (or replace) the tokens of a session, encrypted with the newest key; the user's
        tokens of ended sessions (signed out elsewhere, revoked, expired) are deleted meanwhile."""
        now = int(time.time())
        ciphertext = self._cipher.encrypt(json.dumps(asdict(tokens)).encode()).decode("ascii")
        with self._sessions() as db, db.begin():
            _prune(db, user_id, now)
            row = db.get(OAuthToken, session_id)
            if row is None:
                db.add(
                    OAuthToken(
                        session_id=session_id,
                        user_id=user_id,
                        provider=tokens.provider,
                        ciphertext=ciphertext,
                        expires_at=tokens.expires_at,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.ciphertext, row.expires_at, row.updated_at = ciphertext, tokens.expires_at, now

    def load(self, session_id: str) -> ProviderTokens | None:
        """The tokens of a live session; None if there are none, if the session has ended (revoked or
        expired: its tokens are deleted then) or if no configured key opens them."""
        now = int(time.time())
        with self._sessions() as db:
            found = db.execute(
                select(OAuthToken.ciphertext, AuthSession.revoked_at, AuthSession.expires_at)
                .join(AuthSession, AuthSession.id == OAuthToken.session_id)
                .where(OAuthToken.session_id == session_id)
            ).first()
        if found is None:
            return None
        ciphertext, revoked_at, expires_at = found
        if revoked_at is not None or (expires_at is not None and expires_at <= now):
            self.delete(session_id)
            return None
        try:
            plain, resealed = self._cipher.open(ciphertext.encode("ascii"))
            data = json.loads(plain)
        except (InvalidToken, ValueError):
            log.warning("stored provider tokens cannot be decrypted with the configured keys; dropped")
            self.delete(session_id)
            return None
        if resealed is not None:
            self._reseal(session_id, ciphertext, resealed.decode("ascii"))
        return ProviderTokens(**data)

    def _reseal(self, session_id: str, old: str, new: str) -> None:
        """Store tokens read under an older key under the newest, unless a write replaced them since."""
        with self._sessions() as db, db.begin():
            db.execute(
                update(OAuthToken)
                .where(OAuthToken.session_id == session_id, OAuthToken.ciphertext == old)
                .values(ciphertext=new)
            )

    def delete(self, session_id: str) -> None:
        """Forget a session's tokens."""
        with self._sessions() as db, db.begin():
            db.execute(delete(OAuthToken).where(OAuthToken.session_id == session_id))

    def replace(self, session_id: str, tokens: ProviderTokens) -> None:
        """Overwrite a session's tokens (after a refresh, RFC 6749 §6), encrypted with the newest key."""
        ciphertext = self._cipher.encrypt(json.dumps(asdict(tokens)).encode()).decode("ascii")
        with self._sessions() as db, db.begin():
            row = db.get(OAuthToken, session_id)
            if row is not None:
                row.ciphertext, row.expires_at, row.updated_at = (
                    ciphertext,
                    tokens.expires_at,
                    int(time.time()),
                )

    def follow_session_ends(self) -> Callable[[], None]:
        """Delete provider tokens in the transaction that ends their session, from now on; returns
        the function that stops it.

        Listens to the flushes of this store's sessions for change-log entries: "this session is
        revoked" deletes that session's tokens, "reload this user" (a stamp rotation ends every
        session of the user) deletes the tokens of the user's ended sessions.
        """

        def after_flush(db: Session, _context: Any) -> None:
            entries = [obj for obj in db.new if isinstance(obj, AuthChange)]
            revoked = {e.session_id for e in entries if e.kind == changes.SESSION and e.session_id}
            users = {e.user_id for e in entries if e.kind == changes.USER}
            if not (revoked or users):
                return
            connection = db.connection()
            if revoked:
                connection.execute(delete(OAuthToken).where(OAuthToken.session_id.in_(revoked)))
            now = int(time.time())
            for user_id in sorted(users):
                connection.execute(_ended_tokens(user_id, now))

        event.listen(self._sessions, "after_flush", after_flush)
        return lambda: event.remove(self._sessions, "after_flush", after_flush)


def _ended_tokens(user_id: str, now: int) -> Delete:
    """Delete the tokens of the user's ended sessions (revoked, or expired)."""
    ended = select(AuthSession.id).where(
        AuthSession.user_id == user_id,
        or_(AuthSession.revoked_at.is_not(None), AuthSession.expires_at < now),
    )
    return delete(OAuthToken).where(OAuthToken.user_id == user_id, OAuthToken.session_id.in_(ended))


def _prune(db: Session, user_id: str, now: int) -> None:
    """Before a new session's tokens are stored: drop those of the user's ended sessions (revoked,
    expired) and all but the newest MAX_SESSIONS_PER_USER - 1 others, so tokens never pile up."""
    db.execute(_ended_tokens(user_id, now))
    surplus = (
        select(OAuthToken.session_id)
        .where(OAuthToken.user_id == user_id)
        .order_by(OAuthToken.created_at.desc(), OAuthToken.session_id)
        .offset(MAX_SESSIONS_PER_USER - 1)
    )
    db.execute(delete(OAuthToken).where(OAuthToken.session_id.in_(surplus)))
