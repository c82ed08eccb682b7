"""Accounts and sessions: sign-up, sign-in, sign-out, password change and the admin operations.

Every write that can end a session happens in one transaction together with its entry in the change
log (`wardgate.sessions.changes`), then updates this process's view. The methods are synchronous: the
HTTP layer runs them in worker threads, so neither hashing nor database I/O blocks the event loop.

Why one module of this size: these are the writes that start or end sessions, and they share one
discipline (the change-log entry in the same transaction, the view updated after it, the admin lock
for changes that could remove the last admin) that is easiest to check read together. Reading
(`directory`) and the bounds on session rows (`session_rows`) live apart.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog, Entry
from wardgate.config.model_access import parse_patterns
from wardgate.config.values import Role
from wardgate.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from wardgate.identity import session_rows
from wardgate.identity.address_locks import AddressLocks
from wardgate.identity.records import (
    KEEP,
    AccountPolicy,
    ClientInfo,
    MfaRequired,
    SignedIn,
    SsoSession,
    UserChanges,
)
from wardgate.identity.rules import ACCOUNT_DISABLED, INVALID_CREDENTIALS, role_named
from wardgate.identity.validation import clean_name, normalise_email
from wardgate.security.passwords import PasswordHasher, Verification
from wardgate.security.ratelimit import RateLimiter
from wardgate.security.tokens import Claims, TokenCodec
from wardgate.sessions.changes import log_session_revoked, log_user_change
from wardgate.sessions.records import UserState
from wardgate.sessions.registry import SessionRegistry, load_groups
from wardgate.storage.models import (
    ApiKey,
    AppState,
    AuthSession,
    PendingSignin,
    User,
    UserGroup,
)

_FIRST_ADMIN_KEY = "first_admin"
_ADMIN_LOCK_KEY = "admin_lock"


RECENT_SIGNIN = 600  # seconds: how recent a sign-in proves presence, for accounts without a password
SecondStep = Callable[[UserState, ClientInfo, str, SsoSession | None], MfaRequired]


def _now() -> int:
    return int(time.time())


def _patterns(models: tuple[str, ...]) -> list[str]:
    try:
        return list(parse_patterns(list(models)))
    except ValueError as exc:
        raise BadRequestError(f"allowed_models: {exc}.", code="invalid_models") from None


def _valid_address(email: str) -> str | None:
    """The normalised address when it is a valid one (for the audit log), else None."""
    try:
        return normalise_email(email)
    except BadRequestError:
        return None


class AccountService:
    """Account and session operations over the database, keeping the revocation view coherent."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: SessionRegistry,
        hasher: PasswordHasher,
        codec: TokenCodec,
        policy: AccountPolicy,
        limiter: RateLimiter,
        audit: AuditLog,
        *,
        lock_dir: Path | None = None,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._hasher = hasher
        self._codec = codec
        self.policy = policy
        self._passwords = policy.passwords
        self._limits = policy.limits
        self._limiter = limiter
        self._audit = audit
        self._address_locks = AddressLocks(lock_dir)
        # Set by the second-factor service (`wardgate.mfa`), which builds on this one: for accounts
        # with a factor, a first factor leads to it instead of to a session.
        self.second_step: SecondStep | None = None

    # --- creating accounts --------------------------------------------------------------------

    def has_users(self) -> bool:
        """True once any account exists."""
        with self._sessions() as db:
            return db.scalar(select(User.id).limit(1)) is not None

    def signup(self, name: str, email: str, password: str, client: ClientInfo) -> SignedIn:
        """Self-service sign-up; the very first account becomes admin, atomically."""
        with self._audit.attempt("auth.signup", subject=_valid_address(email)):
            self._limiter.hit(self._limits.signup, f"signup:{self._limiter.client_key(client.ip)}")
            user = self.create_user(name, email, password, role=None, open_signup_required=True)
            return self._start_session(user, client, "password")

    def create_user(
        self,
        name: str,
        email: str,
        password: str | None,
        *,
        role: str | None,
        open_signup_required: bool = False,
        check_policy: bool = True,
    ) -> UserState:
        """Create an account. role=None means "admin if first, else the default role"."""
        name, email = clean_name(name), normalise_email(email)
        chosen = role_named(role) if role is not None else None
        if password is not None and check_policy:
            self._passwords.check(password)
        password_hash = self._hasher.hash(password) if password is not None else None
        for _attempt in range(3):
            try:
                return self._insert_user(name, email, password_hash, chosen, open_signup_required)
            except _FirstAdminRace:
                continue  # someone else became the first admin meanwhile: re-decide our role
        raise ConflictError("Could not create the account; please try again.")

    def _insert_user(
        self, name: str, email: str, password_hash: str | None, role: Role | None, open_signup_required: bool
    ) -> UserState:
        now = _now()
        with self._sessions() as db:
            try:
                with db.begin():
                    first = db.scalar(select(User.id).limit(1)) is None
                    if first:
                        # Exactly one transaction can insert this row; the losers retry as non-first.
                        db.add(AppState(key=_FIRST_ADMIN_KEY, value=email))
                        db.flush()
                    elif open_signup_required and not self.policy.signup_open:
                        raise PermissionDeniedError(
                            "Sign-up is disabled on this site.", code="signup_disabled"
                        )
                    if db.scalar(select(User.id).where(User.email == email)) is not None:
                        raise BadRequestError("This email is already registered.", code="email_taken")
                    row = User(
                        id=str(uuid.uuid4()),
                        email=email,
                        name=name,
                        role=Role.ADMIN if first else (role or self.policy.default_role),
                        active=True,
                        password_hash=password_hash,
                        session_stamp=secrets.token_urlsafe(16),
                        created_at=now,
                        updated_at=now,
                    )
                    db.add(row)
                    db.flush()
                    log_user_change(db, [row.id])
            except IntegrityError as exc:
                if _FIRST_ADMIN_KEY in str(exc.params) or "app_state" in str(exc):
                    raise _FirstAdminRace from None
                raise BadRequestError("This email is already registered.", code="email_taken") from None
        state = UserState.from_row(row)
        self._registry.user_changed(state)
        self._audit.record("user.created", "success", subject=state.email, detail=f"role={state.role}")
        return state

    def ensure_admin(self, email: str, password: str, name: str) -> bool:
        """Create the admin from WEBUI_ADMIN_* when no account exists yet; True if created."""
        if self.has_users():
            return False
        try:
            self.create_user(name, email, password, role=Role.ADMIN, check_policy=False)
        except BadRequestError:
            return False
        return True

    # --- signing in and out -----------------------------------------------------------------------

    def signin(self, email: str, password: str, client: ClientInfo) -> SignedIn | MfaRequired:
        """Check credentials; unknown email and wrong password cost the same and read the same.
        An account with a second factor gets the step for it (`MfaRequired`), not a session."""
        try:
            email = normalise_email(email)
        except BadRequestError:
            email = ""
        with self._audit.attempt("auth.signin") as entry:  # the subject only once it is an account
            entry.resolve = lambda: email if email and self._is_account(email) else None
            return self._signin(email, password, client, entry)

    def address_lock(self, ip_key: str) -> contextlib.AbstractContextManager[None]:
        """The sign-in lock of one client address, for a check-verify-count sequence another first
        factor runs (the directory's); BusyError instead of a queue (`AddressLocks`)."""
        return self._address_locks.hold(ip_key)

    def _is_account(self, email: str) -> bool:
        with self._sessions() as db:
            return db.scalar(select(User.id).where(User.email == email)) is not None

    def _signin(self, email: str, password: str, client: ClientInfo, entry: Entry) -> SignedIn | MfaRequired:
        # Per (account, IP) the attempt is counted *before* the password check, atomically, so N
        # concurrent guesses cannot all slip through; another IP is unaffected (no lock-out) and a
        # success clears it. Per IP across accounts (spraying) only failures count, so check, verify
        # and count run under a lock per IP: concurrent sprays from one IP cannot all pass the check.
        # An address already refused for spraying is refused first, before it can make a bucket per
        # account it names: a flood of made-up accounts must not grow the limiter's keys.
        bucket = self._limiter.client_key(client.ip)  # an IPv6 client counts per network, not per address
        ip_key, account_key = f"signin-ip:{bucket}", f"signin:{email}:{bucket}"
        self._limiter.check(self._limits.signin_ip, ip_key)
        self._limiter.hit(self._limits.signin, account_key)
        with self.address_lock(ip_key):
            self._limiter.check(self._limits.signin_ip, ip_key)
            row, verification = self._verify_credentials(email, password)
            entry.subject = row.email if row is not None else None
            if row is None or not verification.ok:
                self._limiter.count(self._limits.signin_ip, ip_key)
                raise BadRequestError(INVALID_CREDENTIALS, code="invalid_credentials")
        self._limiter.clear(self._limits.signin, account_key)
        if not row.active:
            raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
        if verification.new_hash is not None:
            self._store_upgraded_hash(row, verification.new_hash)
        return self.begin_session(UserState.from_row(row), client, "password")

    def _verify_credentials(self, email: str, password: str) -> tuple[User | None, Verification]:
        with self._sessions() as db:
            row = db.scalar(select(User).where(User.email == email)) if email else None
        return row, self._hasher.verify(password, row.password_hash if row else None)

    def _store_upgraded_hash(self, row: User, new_hash: str) -> None:
        # Compare-and-swap: only replace the exact hash we verified against.
        with self._sessions() as db, db.begin():
            db.execute(
                update(User)
                .where(User.id == row.id, User.password_hash == row.password_hash)
                .values(password_hash=new_hash)
            )

    def begin_session(
        self,
        user: UserState,
        client: ClientInfo,
        method: str,
        *,
        second_factor: bool = False,
        sso: SsoSession | None = None,
    ) -> SignedIn | MfaRequired:
        """After a first factor: a session, or — for an account with a second factor that this
        sign-in has not already shown (`second_factor`: an identity provider's MFA) — its step.
        `sso`: the provider session it came from."""
        if user.mfa and not second_factor and self.second_step is not None:
            return self.second_step(user, client, method, sso)
        if second_factor:  # the provider's word: the token says so, for MFA_REQUIRED_ROLES
            return self._start_session(user, client, method, mfa_at=_now(), provider_mfa=True, sso=sso)
        return self._start_session(user, client, method, sso=sso)

    def _start_session(
        self,
        user: UserState,
        client: ClientInfo,
        method: str,
        *,
        mfa_at: int | None = None,
        provider_mfa: bool = False,
        sso: SsoSession | None = None,
    ) -> SignedIn:
        """A new session, within the account's bounds (`session_rows`): at most `max_sessions` live,
        the oldest ending first. `mfa_at`: when a second factor was shown for it; `provider_mfa`: an
        identity provider showed it (the token's `mfa` claim, which counts for MFA_REQUIRED_ROLES
        while the account has no factor of wardgate's)."""
        cap = self.policy.max_sessions
        issued = self._codec.issue(user.id, user.session_stamp, mfa=provider_mfa)
        now = issued.issued_at
        with self._sessions() as db, db.begin():
            session_rows.refuse_past_ended_bound(db, user.id, cap, now)
            db.add(
                AuthSession(
                    id=issued.session_id,
                    user_id=user.id,
                    auth_method=method,
                    created_at=now,
                    expires_at=issued.expires_at,
                    last_seen_at=now,
                    ip=client.ip,
                    user_agent=(client.user_agent or "")[:256] or None,
                    mfa_at=mfa_at,
                    sso_provider=sso.provider if sso else None,
                    sso_sid=sso.sid if sso else None,
                )
            )
            surplus = session_rows.end_surplus(db, user.id, issued.session_id, cap, now)
        for session_id, expires_at in surplus:
            self._registry.session_revoked(session_id, expires_at)
        if surplus:
            self._audit.record(
                "auth.session_revoked",
                "success",
                actor="wardgate",
                subject=user.email,
                detail=f"{len(surplus)} oldest: more than {cap} live sessions",
            )
        return SignedIn(user=user, token=issued)

    def start_session(
        self,
        user: UserState,
        client: ClientInfo,
        method: str,
        *,
        mfa_at: int | None = None,
        sso: SsoSession | None = None,
    ) -> SignedIn:
        """Start a session for a user another mechanism authenticated (a second factor, a passkey)."""
        return self._start_session(user, client, method, mfa_at=mfa_at, sso=sso)

    def apply_provider_role(self, user_id: str, role: str) -> UserState:
        """Set the role an identity provider's claims grant (re-applied at every SSO sign-in)."""
        return self._update(user_id, role=role_named(role))

    def signout(self, claims: Claims) -> None:
        """Revoke the session behind these claims (one that no longer exists is already ended)."""
        with contextlib.suppress(NotFoundError):
            self.revoke_session(claims.user_id, claims.session_id, event="auth.signout")

    def revoke_session(self, user_id: str, session_id: str, *, event: str = "auth.session_revoked") -> None:
        """Revoke one session of `user_id` (404 if it is not theirs)."""
        email = self._email_of(user_id)
        with self._audit.attempt(
            event, actor=email, subject=email, detail=f"session={session_id[:8]}"
        ) as entry:
            entry.happened = self._revoke_session(user_id, session_id)

    def _email_of(self, user_id: str) -> str:
        user = self._registry.view.users.get(user_id)
        return user.email if user else user_id

    def _revoke_session(self, user_id: str, session_id: str) -> bool:
        """Whether the session ended now (False: it had ended already, and nothing is written: a
        signed-out token may still sign out, over and over, found by review)."""
        with self._sessions() as db, db.begin():
            session = db.get(AuthSession, session_id)
            if session is None or session.user_id != user_id:
                raise NotFoundError("Session not found.")
            if session.revoked_at is not None:
                return False
            session.revoked_at = _now()
            log_session_revoked(db, user_id, session_id, session.expires_at)
            expires_at = session.expires_at
        self._registry.session_revoked(session_id, expires_at)
        return True

    def end_sso_sessions(self, provider: str, *, sid: str | None, user_id: str | None) -> int:
        """End the live sessions that a provider session began (OpenID Connect Back-Channel Logout):
        those with its `sid`, and/or every one of `user_id`'s from this provider. How many ended."""
        now = _now()
        query = select(AuthSession).where(
            AuthSession.sso_provider == provider,
            AuthSession.revoked_at.is_(None),
            (AuthSession.expires_at.is_(None)) | (AuthSession.expires_at > now),
        )
        if sid is not None:
            query = query.where(AuthSession.sso_sid == sid)
        if user_id is not None:
            query = query.where(AuthSession.user_id == user_id)
        pending = delete(PendingSignin).where(PendingSignin.sso_provider == provider)
        if sid is not None:
            pending = pending.where(PendingSignin.sso_sid == sid)
        if user_id is not None:
            pending = pending.where(PendingSignin.user_id == user_id)
        with self._sessions() as db, db.begin():
            db.execute(pending)  # a second step still open for that provider session ends too
            ended = db.scalars(query.limit(self.policy.max_sessions * 10).with_for_update()).all()
            for session in ended:
                session.revoked_at = now
                log_session_revoked(db, session.user_id, session.id, session.expires_at)
            gone = [(s.id, s.expires_at) for s in ended]
        for session_id, expires_at in gone:
            self._registry.session_revoked(session_id, expires_at)
        return len(gone)

    # --- changing accounts --------------------------------------------------------------------------

    def change_password(self, user_id: str, current: str, new: str) -> None:
        """Change one's own password; every session of the user ends (the caller signs in again)."""
        email = self._email_of(user_id)
        with self._audit.attempt("auth.password_changed", actor=email, subject=email):
            self._change_password(user_id, current, new)

    def _change_password(self, user_id: str, current: str, new: str) -> None:
        self._limiter.hit(self._limits.password_change, f"password-change:{user_id}")
        with self._sessions() as db:
            row = db.get(User, user_id)
        if row is None:
            raise AuthenticationError("Not authenticated.")
        if not self._hasher.verify(current, row.password_hash).ok:
            raise BadRequestError("The current password is incorrect.", code="incorrect_password")
        self._passwords.check(new)
        self._update(user_id, password_hash=self._hasher.hash(new), rotate_stamp=True)

    def confirm_presence(self, user_id: str, password: str | None, signed_in_at: int) -> None:
        """Before a change that would let someone else in (linking a sign-in provider): the person
        at the keyboard proves they are the account's owner, not whoever holds a session of it.

        With a password: the current password (counted like a password change). Without one: a
        sign-in less than `RECENT_SIGNIN` seconds ago.
        """
        self._limiter.hit(self._limits.password_change, f"password-change:{user_id}")
        with self._sessions() as db:
            row = db.get(User, user_id)
        if row is None:
            raise AuthenticationError("Not authenticated.")
        if row.password_hash is not None:
            if not password or not self._hasher.verify(password, row.password_hash).ok:
                raise BadRequestError("The current password is incorrect.", code="incorrect_password")
        elif signed_in_at < _now() - RECENT_SIGNIN:
            raise PermissionDeniedError(
                "Sign in again first: this needs a sign-in from the last ten minutes.",
                code="signin_not_recent",
            )

    def revoke_all_sessions(self, user_id: str, *, actor: str | None = None) -> UserState:
        """End every session of a user."""
        email = self._email_of(user_id)
        with self._audit.attempt("auth.sessions_revoked", actor=actor or email, subject=email):
            return self._update(user_id, rotate_stamp=True)

    def update_user(self, actor: UserState, user_id: str, changes: UserChanges) -> UserState:
        """An admin's edit: role, name, email, password, enabled/disabled."""
        if changes.role is not None:
            event = "user.role_changed"
        elif changes.active is not None:
            event = "user.enabled" if changes.active else "user.disabled"
        else:
            event = "user.updated"
        fields = [
            name
            for name in ("role", "name", "email", "password", "active", "allowed_models", "token_budget")
            if getattr(changes, name) not in (None, KEEP)
            or (name in ("allowed_models", "token_budget") and getattr(changes, name) is None)
        ]
        detail = ", ".join(f"role={changes.role}" if f == "role" else f for f in fields)
        with self._audit.attempt(event, actor=actor.email, subject=self._email_of(user_id), detail=detail):
            return self._apply_changes(user_id, changes)

    def _apply_changes(self, user_id: str, changes: UserChanges) -> UserState:
        values: dict[str, object] = {}
        rotate = False
        if changes.role is not None:
            values["role"] = role_named(changes.role)
        if changes.name is not None:
            values["name"] = clean_name(changes.name)
        if changes.email is not None:
            values["email"] = normalise_email(changes.email)
        if changes.password:
            self._passwords.check(changes.password)
            values["password_hash"] = self._hasher.hash(changes.password)
            rotate = True
        if changes.active is not None:
            values["active"] = changes.active
            rotate = rotate or not changes.active
        if changes.allowed_models is not KEEP:
            models = changes.allowed_models
            values["allowed_models"] = None if models is None else json.dumps(_patterns(models))
        if changes.token_budget is not KEEP:
            budget = changes.token_budget
            values["token_budget"] = None if budget is None else json.dumps(budget.as_dict())
        return self._update(user_id, rotate_stamp=rotate, **values)

    def delete_user(self, actor: UserState, user_id: str) -> None:
        """Delete an account; its sessions end with it."""
        with self._audit.attempt("user.deleted", actor=actor.email, subject=self._email_of(user_id)):
            self._delete_user(actor, user_id)

    def _delete_user(self, actor: UserState, user_id: str) -> None:
        if actor.id == user_id:
            raise BadRequestError("You cannot delete your own account.", code="self_delete")
        with self._sessions() as db, db.begin():
            _take_admin_lock(db)
            row = db.get(User, user_id, with_for_update=True)
            if row is None:
                raise NotFoundError("User not found.")
            if row.role == Role.ADMIN and row.active:
                self._require_other_admin(db, user_id)
            db.delete(row)
            log_user_change(db, [user_id])
        self._registry.user_deleted(user_id)

    def _update(self, user_id: str, *, rotate_stamp: bool = False, **values: object) -> UserState:
        with self._sessions() as db:
            try:
                with db.begin():
                    if "role" in values or values.get("active") is False:
                        _take_admin_lock(db)
                    row = db.get(User, user_id, with_for_update=True)
                    if row is None:
                        raise NotFoundError("User not found.")
                    loses_admin = (
                        row.role == Role.ADMIN
                        and row.active
                        and (
                            values.get("role", Role.ADMIN) != Role.ADMIN
                            or values.get("active", True) is False
                        )
                    )
                    if loses_admin:
                        self._require_other_admin(db, user_id)
                    for key, value in values.items():
                        setattr(row, key, value)
                    if rotate_stamp:
                        row.session_stamp = secrets.token_urlsafe(16)
                        # Every session ends, and the API keys with them (docs/api-keys.md); other
                        # instances refuse the keys at once through the stamp check.
                        db.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
                        # And every sign-in still waiting for its second step: one begun with the
                        # old password was finished with a code after the change (found by review).
                        db.execute(delete(PendingSignin).where(PendingSignin.user_id == user_id))
                        db.execute(
                            update(AuthSession)
                            .where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None))
                            .values(revoked_at=_now())
                        )
                    row.updated_at = _now()
                    log_user_change(db, [user_id])
            except IntegrityError:
                raise BadRequestError("This email is already registered.", code="email_taken") from None
        with self._sessions() as db:
            groups = load_groups(db, [user_id]).get(user_id, ())
        state = UserState.from_row(row, groups)
        self._registry.user_changed(state)
        return state

    def set_groups(self, user_id: str, groups: Iterable[str]) -> UserState:
        """Replace the user's groups (from an SSO claim); every instance learns it like any change."""
        names = sorted({g[:255] for g in groups})
        with self._sessions() as db, db.begin():
            db.execute(delete(UserGroup).where(UserGroup.user_id == user_id))
            db.add_all(UserGroup(user_id=user_id, name=name) for name in names)
            row = db.get(User, user_id)
            if row is None:
                raise NotFoundError("User not found.")
            log_user_change(db, [user_id])
        state = UserState.from_row(row, tuple(names))
        self._registry.user_changed(state)
        return state

    @staticmethod
    def _require_other_admin(db: Session, user_id: str) -> None:
        others = db.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.ADMIN.value, User.active.is_(True), User.id != user_id)
        )
        if not others:
            raise BadRequestError(
                "The last administrator cannot be demoted, disabled or deleted.", code="last_admin"
            )

    # --- reading ----------------------------------------------------------------------------------

    def current_user(self, user_id: str) -> UserState:
        """The user as the database has it now (read only; the view is not touched)."""
        with self._sessions() as db:
            row = db.get(User, user_id)
            if row is None:
                raise NotFoundError("User not found.")
            return UserState.from_row(row, load_groups(db, [user_id]).get(user_id, ()))

    def refresh_user(self, user_id: str) -> UserState:
        """After another service changed the user in its own transaction (with its change-log
        entry): the user as it is now, handed to this process's view when nothing newer got there
        first (`SessionRegistry.user_reloaded`)."""
        state = self._registry.user_reloaded(user_id)
        if state is None:
            raise NotFoundError("User not found.")
        return state

    def get_user(self, user_id: str) -> User:
        """One account row, or NotFoundError."""
        with self._sessions() as db:
            row = db.get(User, user_id)
        if row is None:
            raise NotFoundError("User not found.")
        return row

    def find_by_email(self, email: str) -> User | None:
        """The account with this email, if any."""
        with self._sessions() as db:
            return db.scalar(select(User).where(User.email == normalise_email(email)))


def _take_admin_lock(db: Session) -> None:
    """Serialise changes that can remove an admin (first statement of the transaction): a row lock on
    PostgreSQL, the database write lock on SQLite. The row is created by migration 0005; without it
    nothing would be serialised, so the change is refused rather than made unguarded."""
    taken = db.execute(update(AppState).where(AppState.key == _ADMIN_LOCK_KEY).values(value=AppState.value))
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise StoreUnavailableError(
            "the admin_lock row is missing (a migration was undone?); run `wardgate db upgrade`"
        )


class _FirstAdminRace(Exception):
    """Internal: another transaction claimed the first-admin slot concurrently."""
