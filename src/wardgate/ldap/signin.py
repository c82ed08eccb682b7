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

import time
import uuid

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.errors import BadRequestError, PermissionDeniedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.records import AuthLimits, ClientInfo, MfaRequired, SignedIn
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.ldap.directory import LdapDirectory, LdapPerson
from wardgate.security.ratelimit import RateLimiter
from wardgate.sessions.records import UserState
from wardgate.storage.models import OAuthIdentity

PROVIDER = "ldap"
EMAIL_TAKEN = (
    "An account with this email address already exists here and is not linked to the directory. "
    "Sign in with it, or ask an administrator."
)


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
            try:
                person = self.directory.verify(username, password)
            except BadRequestError:
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
            user = self._accounts.create_user(person.name, person.email, None, role=None)
        except BadRequestError as exc:  # a concurrent first sign-in of the same person won
            winner = self._linked(person)
            if exc.code == "email_taken" and winner is not None:
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
                        issuer=self.directory.config.issuer[:512],
                        subject=person.key,
                        user_id=user_id,
                        email=person.email,
                        email_verified=True,  # the directory's own record
                        created_at=now,
                        last_login_at=now,
                    )
                )
        except IntegrityError:
            pass  # linked by a concurrent sign-in of the same person: the same account
