"""Signing in with the directory: its verdict, wardgate's account and session.

The same limits as a password sign-in (per name and address before the directory is asked, per
address across names for failures), the same audit event (`auth.signin`, detail `ldap`), the same
second factors. An account is created at the first sign-in (the very first account becomes the
admin, race-free, as for every sign-up) and keyed to the directory entry's id afterwards, so a
renamed address keeps its account. An existing wardgate account with the same address is never
taken over: a directory whose people can set their own `mail` would otherwise hand them any account
here, the admin's included (Open WebUI links by address alone).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.errors import BadRequestError, BusyError, PermissionDeniedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.records import AuthLimits, ClientInfo, MfaRequired, SignedIn
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.identity.validation import clean_name
from wardgate.ldap.directory import DirectoryUnavailableError, LdapDirectory, LdapPerson
from wardgate.security.ratelimit import RateLimiter
from wardgate.sessions.records import UserState
from wardgate.storage.models import OAuthIdentity

PROVIDER = "ldap"
EMAIL_TAKEN = (
    "An account with this email address already exists here and is not linked to the directory. "
    "Sign in with it, or ask an administrator."
)


MAX_CONCURRENT = 8  # directory questions at once, per process
_questions = threading.BoundedSemaphore(MAX_CONCURRENT)


@contextlib.contextmanager
def _asking() -> Iterator[None]:
    if not _questions.acquire(timeout=5):
        raise BusyError("The directory is busy; try again in a moment.", retry_after=2)
    try:
        yield
    finally:
        _questions.release()


def _name(person: LdapPerson) -> str:
    """The directory's display name when it is a usable one, else the address's local part."""
    try:
        return clean_name(person.name)
    except BadRequestError:
        return person.email.split("@", 1)[0][:255] or "user"


class LdapSignIn:
    """Directory sign-in: limits, the directory's verdict, the account, the session (or its MFA step)."""

    def __init__(
        self,
        directory: LdapDirectory,
        accounts: AccountService,
        sessions: sessionmaker[Session],
        limiter: RateLimiter,
        limits: AuthLimits,
        audit: AuditLog,
        *,
        manage_groups: bool,
    ) -> None:
        self.directory = directory
        self._accounts = accounts
        self._sessions = sessions
        self._limiter = limiter
        self._limits = limits
        self._audit = audit
        self._manage_groups = manage_groups

    def signin(self, username: str, password: str, client: ClientInfo) -> SignedIn | MfaRequired:
        """The session (or the second step) for a directory name and password."""
        with self._audit.attempt("auth.signin", detail="ldap") as entry:
            bucket = self._limiter.client_key(client.ip)
            ip_key = f"signin-ip:{bucket}"
            name_key = f"signin:ldap:{username.strip().lower()[:256]}:{bucket}"
            self._limiter.check(self._limits.signin_ip, ip_key)
            self._limiter.hit(self._limits.signin, name_key)
            # As the password sign-in: check, ask and count under the address's lock, so that
            # concurrent guesses from one address cannot all pass the check; and at most
            # MAX_CONCURRENT questions at once, so a slow directory cannot take every worker.
            with self._accounts.address_lock(ip_key), _asking():
                self._limiter.check(self._limits.signin_ip, ip_key)
                try:
                    person = self.directory.verify(username, password)
                except (BadRequestError, DirectoryUnavailableError):
                    self._limiter.count(self._limits.signin_ip, ip_key)
                    raise
            self._limiter.clear(self._limits.signin, name_key)
            user = self._account(person)
            entry.subject = user.email
            if not user.active:
                raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
            if self._manage_groups:
                user = self._accounts.set_groups(user.id, person.groups)
            return self._accounts.begin_session(user, client, PROVIDER)

    def _account(self, person: LdapPerson) -> UserState:
        linked = self._linked(person)
        if linked is not None:
            return self._accounts.current_user(linked)
        if self._accounts.find_by_email(person.email) is not None:
            raise PermissionDeniedError(EMAIL_TAKEN, code="ldap_email_taken")
        try:
            user = self._accounts.create_user(_name(person), person.email, None, role=None)
        except BadRequestError as exc:
            if exc.code != "email_taken":
                raise
            winner = self._linked(person)  # a concurrent first sign-in of the same person won
            if winner is not None:
                return self._accounts.current_user(winner)
            raise PermissionDeniedError(EMAIL_TAKEN, code="ldap_email_taken") from None
        self._link(person, user.id)
        return user

    def _linked(self, person: LdapPerson) -> str | None:
        issuer = self.directory.config.issuer
        with self._sessions() as db, db.begin():
            user_id = db.scalar(
                select(OAuthIdentity.user_id).where(
                    OAuthIdentity.issuer == issuer, OAuthIdentity.subject == person.key
                )
            )
            if user_id is not None:
                db.execute(
                    update(OAuthIdentity)
                    .where(OAuthIdentity.issuer == issuer, OAuthIdentity.subject == person.key)
                    .values(last_login_at=int(time.time()), email=person.email)
                )
        return user_id

    def _link(self, person: LdapPerson, user_id: str) -> None:
        now = int(time.time())
        try:
            with self._sessions() as db, db.begin():
                db.add(
                    OAuthIdentity(
                        id=str(uuid.uuid4()),
                        provider=PROVIDER,
                        issuer=self.directory.config.issuer,
                        subject=person.key,
                        user_id=user_id,
                        email=person.email,
                        # Not proof of the address for merging a provider's sign-in into this
                        # account: a directory may let people set their own `mail`.
                        email_verified=False,
                        created_at=now,
                        last_login_at=now,
                    )
                )
        except IntegrityError:
            pass  # linked by a concurrent sign-in of the same person: the same account
