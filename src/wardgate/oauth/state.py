"""The pending sign-in: bound to the browser, short-lived, single use.

`login` stores a `LoginState` (provider, `state`, `nonce`, PKCE `code_verifier`, redirect URI, where
to go afterwards, and for a link from the account page the user and session that asked) in a cookie
sealed with Fernet — encrypted *and* authenticated, with its age checked
on opening (10 minutes). Open WebUI keeps the same values in a signed-but-readable session cookie for
an hour; here the verifier and nonce are not even readable by the browser.

The callback must show the same `state` (RFC 6749 §10.12, CSRF) and the cookie is consumed: its id is
inserted into `oauth_state_uses`, whose primary key makes a second use fail — on every instance that
shares the database — so a replayed callback is refused even with the cookie copied (RFC 9700 §4.2.4).
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import BadRequestError
from wardgate.security.keys import FernetRing
from wardgate.storage.models import OAuthStateUse

STATE_LIFETIME = 600  # seconds between "sign in with ..." and the callback
STATE_MISSING = (
    "The sign-in could not be completed: it was started in another browser, or cookies are blocked. "
    "Please try again."
)
STATE_EXPIRED = "The sign-in took too long or was interrupted. Please try again."
STATE_MISMATCH = "The sign-in response does not belong to the sign-in this browser started. Please try again."
STATE_USED = "This sign-in response has already been used. Please sign in again."


@dataclass(frozen=True, slots=True)
class LoginState:
    """Everything the callback needs to finish what `login` started."""

    id: str  # single-use id
    provider: str
    state: str
    nonce: str | None
    code_verifier: str
    redirect_uri: str
    next_path: str
    issued_at: int
    # A link from the account page: the person and the session that asked (both None for a sign-in).
    link_user: str | None = None
    link_session: str | None = None


class LoginStateSealer:
    """Seal and open `LoginState` cookies (Fernet: AES-CBC + HMAC-SHA256, timestamped).

    Sealed with the first key, opened with any: a sign-in begun on an instance that seals with another
    secret of the ring (a rolling rotation) still finishes on this one."""

    def __init__(self, keys: bytes | Sequence[bytes], *, lifetime: int = STATE_LIFETIME) -> None:
        self._fernet = FernetRing([keys] if isinstance(keys, bytes) else keys)
        self.lifetime = lifetime

    def seal(self, state: LoginState) -> str:
        """The cookie value."""
        return self._fernet.encrypt(json.dumps(asdict(state)).encode()).decode("ascii")

    def open(self, sealed: str | None, provider: str, returned_state: str | None) -> LoginState:
        """The state this browser started, checked against the callback's `state`; else BadRequestError."""
        if not sealed:
            raise BadRequestError(STATE_MISSING, code="oauth_state_missing")
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode("ascii"), ttl=self.lifetime))
            state = LoginState(**data)
        except (InvalidToken, UnicodeEncodeError, ValueError, TypeError):
            raise BadRequestError(STATE_EXPIRED, code="oauth_state_invalid") from None
        # RFC 6749 §10.12: the `state` returned must be the one this browser's request carried.
        if (
            state.provider != provider
            or not returned_state
            or not hmac.compare_digest(state.state.encode(), returned_state.encode("utf-8", "replace"))
        ):
            raise BadRequestError(STATE_MISMATCH, code="oauth_state_mismatch")
        return state


class StateLedger:
    """Remembers consumed sign-in states until they expire (the database: shared by every instance)."""

    def __init__(self, sessions: sessionmaker[Session], *, lifetime: int = STATE_LIFETIME) -> None:
        self._sessions = sessions
        self.lifetime = lifetime

    def consume(self, state: LoginState) -> None:
        """Mark the state used; BadRequestError if it already was."""
        now = int(time.time())
        try:
            with self._sessions() as db, db.begin():
                db.execute(delete(OAuthStateUse).where(OAuthStateUse.expires_at < now))
                db.add(OAuthStateUse(id=state.id, expires_at=state.issued_at + self.lifetime + 60))
        except IntegrityError:
            raise BadRequestError(STATE_USED, code="oauth_state_used") from None
