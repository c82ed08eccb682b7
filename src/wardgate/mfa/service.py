"""Second factors as the HTTP layer uses them: the sign-in step, enrolment, step-up, an admin's reset.

The sign-in step: a first factor that passed for an account with a second factor opens a pending
sign-in (`PendingSignin`) and hands out its `mfa_token`: 256 random bits, stored only as a SHA-256,
five minutes, one account, one use, five wrong codes. Code attempts also count per account in the
limiter every instance shares (`MFA_RATE_LIMIT`), before the code is checked, so guesses spread over
many tokens or instances are bounded too.

Step-up: a session remembers when a second factor was last shown in it (`auth_sessions.mfa_at`);
sensitive changes of an account that has a factor need that to be within `MFA_STEP_UP_MAX_AGE`.
Adding the first factor needs a fresh sign-in instead, so that a borrowed session cannot lock its
owner out with a factor of its own.

Why one module of this size: every operation here decides whether a second factor was shown, and
they share the same few rules (the pending sign-in's life, the per-account attempt count, the
step-up window, the last-factor rule); read together, a gap between them is easy to see. The
factor rows (`factors`) and each kind's checks (`totp`, `recovery`, `passkeys`) live apart.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.config.values import Role
from wardgate.errors import BadRequestError, NotFoundError, PermissionDeniedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.records import ClientInfo, MfaRequired, SignedIn, SsoSession
from wardgate.identity.rules import ACCOUNT_DISABLED
from wardgate.mfa import passkeys, totp
from wardgate.mfa.factors import Factors, FactorStore, PasskeyInfo
from wardgate.mfa.passkeys import CeremonySealer, RelyingParty
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.security.tokens import Claims
from wardgate.sessions.records import UserState
from wardgate.storage.models import AuthSession, OAuthStateUse, PendingSignin, User
from wardgate.storage.retention import prune_before

PENDING_LIFETIME = 300  # seconds to enter the second factor
MAX_FAILURES = 5  # wrong codes per pending sign-in
TOKEN_INVALID = "This sign-in has expired or was already completed. Please sign in again."  # noqa: S105
CODE_INVALID = "The code is not valid. Check your authenticator app or use a recovery code."
STEP_UP_REQUIRED = "Confirm it is you with your second factor first (a code, a recovery code or a passkey)."
FRESH_SIGNIN_REQUIRED = "Sign in again first: adding a second factor needs a sign-in from the last minutes."
PASSKEYS_UNAVAILABLE = "Passkeys need WEBUI_URL set to the site's address (a host name, not an IP address)."


def _ceremonies() -> ModuleType:
    """py_webauthn's options and checks (`mfa.ceremonies`), imported at the first passkey ceremony:
    4 MB and 90 ms of imports that a site whose people use no passkeys never needs."""
    from wardgate.mfa import ceremonies

    return ceremonies


@dataclass(frozen=True, slots=True)
class MfaPolicy:
    """The deployment's second-factor settings, as plain values."""

    required_roles: frozenset[Role]
    step_up_max_age: int  # seconds
    codes: Limit  # code attempts per account
    signin_ip: Limit  # failed passkey sign-ins per client address (the password sign-in's limit)
    issuer: str  # the name authenticator apps show
    relying_party: RelyingParty | None
    passwordless: bool = True  # email-free passkey sign-in (off with ENABLE_PASSWORD_AUTH=false)


@dataclass(frozen=True, slots=True)
class TotpSetup:
    """A secret being set up: shown once, as text and as the address in the QR code."""

    secret: str
    otpauth_uri: str


@dataclass(frozen=True, slots=True)
class PasskeyAdded:
    """A new passkey, and the recovery codes when it is the account's first factor."""

    passkey: PasskeyInfo
    recovery_codes: list[str] | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _now() -> int:
    return int(time.time())


class MfaService:
    """Enrolment and verification of second factors, and the rules on when they are needed."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        accounts: AccountService,
        factors: FactorStore,
        sealer: CeremonySealer,
        limiter: RateLimiter,
        audit: AuditLog,
        policy: MfaPolicy,
    ) -> None:
        self._sessions = sessions
        self._accounts = accounts
        self.factors = factors
        self._sealer = sealer
        self._limiter = limiter
        self._audit = audit
        self.policy = policy
        accounts.second_step = self.open_pending

    # --- the rules --------------------------------------------------------------------------------

    def enrolment_required(self, user: UserState, claims: Claims | None = None) -> bool:
        """Whether the account's role needs a second factor it does not have (`MFA_REQUIRED_ROLES`).
        A session whose single sign-on showed one at the provider (`claims.mfa`) satisfies it."""
        if user.role not in self.policy.required_roles or user.mfa:
            return False
        return claims is None or not claims.mfa

    def recent_until(self, claims: Claims) -> int | None:
        """Until when this session counts as having shown a second factor recently."""
        with self._sessions() as db:
            mfa_at = db.scalar(select(AuthSession.mfa_at).where(AuthSession.id == claims.session_id))
        return mfa_at + self.policy.step_up_max_age if mfa_at else None

    def require_step_up(self, user: UserState, claims: Claims) -> None:
        """For a sensitive change: 403 (`step_up_required`) unless the account has no factor or this
        session showed one within `MFA_STEP_UP_MAX_AGE`."""
        if not user.mfa:
            return
        until = self.recent_until(claims)
        if until is None or until < _now():
            raise PermissionDeniedError(STEP_UP_REQUIRED, code="step_up_required")

    def _require_enrolment_allowed(self, user: UserState, claims: Claims) -> None:
        """Factor changes: a step-up when the account has a factor, else a fresh sign-in."""
        if user.mfa:
            self.require_step_up(user, claims)
        elif claims.issued_at + self.policy.step_up_max_age < _now():
            raise PermissionDeniedError(FRESH_SIGNIN_REQUIRED, code="fresh_signin_required")

    def _rp(self) -> RelyingParty:
        if self.policy.relying_party is None:
            raise BadRequestError(PASSKEYS_UNAVAILABLE, code="passkeys_unavailable")
        return self.policy.relying_party

    # --- the sign-in step -----------------------------------------------------------------------

    def open_pending(
        self, user: UserState, client: ClientInfo, method: str, sso: SsoSession | None = None
    ) -> MfaRequired:
        """After a first factor: the pending sign-in and its token (AccountService's `second_step`);
        `sso`, the provider session it came from, goes on to the session it becomes."""
        token = secrets.token_urlsafe(32)
        now = _now()
        with self._sessions() as db, db.begin():
            db.execute(delete(PendingSignin).where(PendingSignin.expires_at < now))
            db.add(
                PendingSignin(
                    id=_digest(token),
                    user_id=user.id,
                    auth_method=method,
                    sso_provider=sso.provider if sso else None,
                    sso_sid=sso.sid if sso else None,
                    failures=0,
                    ip=client.ip,
                    created_at=now,
                    expires_at=now + PENDING_LIFETIME,
                )
            )
        methods = self.factors.of(user.id).methods
        self._audit.record("auth.mfa_challenge", "success", subject=user.email, ip=client.ip, detail=method)
        return MfaRequired(user=user, token=token, methods=methods)

    def _pending(self, token: str) -> PendingSignin:
        return self._pending_by_id(_digest(token) if 0 < len(token) <= 128 else "")

    def _pending_by_id(self, pending_id: str) -> PendingSignin:
        """The open pending sign-in with this id: not expired, not worn out by wrong codes."""
        with self._sessions() as db:
            row = db.get(PendingSignin, pending_id) if pending_id else None
        if row is None or row.expires_at <= _now() or row.failures >= MAX_FAILURES:
            raise BadRequestError(TOKEN_INVALID, code="mfa_token_invalid")
        return row

    def pending_methods(self, token: str) -> tuple[str, ...]:
        """The second-step methods of a pending sign-in that is still open (400 otherwise)."""
        return self.factors.of(self._pending(token).user_id).methods

    def _take_attempt(self, row: PendingSignin) -> None:
        """Count one try against the pending sign-in and the account, before the code is checked."""
        self._limiter.hit(self.policy.codes, f"mfa:{row.user_id}")
        with self._sessions() as db, db.begin():
            taken = db.execute(
                update(PendingSignin)
                .where(
                    PendingSignin.id == row.id,
                    PendingSignin.failures < MAX_FAILURES,
                    PendingSignin.expires_at > _now(),
                )
                .values(failures=PendingSignin.failures + 1)
            )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise BadRequestError(TOKEN_INVALID, code="mfa_token_invalid")

    def _finish_pending(self, row: PendingSignin, how: str, client: ClientInfo) -> SignedIn:
        """Consume the pending sign-in (exactly one caller can) and start the session.

        Ending every session (a password change, say) deletes the pending sign-ins too. One that
        lands between this consumption and the session's start would hand the new session the new
        stamp (found by review): the stamp is read where the sign-in is consumed, and a session is
        started only if it still holds. (Consumed first: the row's lock orders this against the
        change, which deletes the same rows.)"""
        with self._sessions() as db, db.begin():
            gone = db.execute(delete(PendingSignin).where(PendingSignin.id == row.id))
            stamp = db.scalar(select(User.session_stamp).where(User.id == row.user_id))
        if gone.rowcount != 1:  # type: ignore[attr-defined]
            raise BadRequestError(TOKEN_INVALID, code="mfa_token_invalid")
        user = self._accounts.current_user(row.user_id)
        if user.session_stamp != stamp:
            raise BadRequestError(TOKEN_INVALID, code="mfa_token_invalid")
        if not user.active:
            raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
        sso = SsoSession(row.sso_provider, row.sso_sid) if row.sso_provider else None
        method = f"{row.auth_method}+{how}"
        return self._accounts.start_session(user, client, method, mfa_at=_now(), sso=sso)

    def verify_code(self, token: str, code: str, client: ClientInfo) -> SignedIn:
        """The second step with a TOTP or recovery code: the session, or 400 (429 when limited)."""
        row = self._pending(token)
        email = self._accounts.current_user(row.user_id).email
        with self._audit.attempt("auth.mfa_verified", subject=email, detail="code") as entry:
            self._take_attempt(row)
            how = self._check_code(row.user_id, code)
            if how is None:
                if row.failures + 1 >= MAX_FAILURES:
                    with self._sessions() as db, db.begin():
                        db.execute(delete(PendingSignin).where(PendingSignin.id == row.id))
                raise BadRequestError(CODE_INVALID, code="mfa_code_invalid")
            entry.subject = email
            return self._finish_pending(row, how, client)

    def _check_code(self, user_id: str, code: str) -> str | None:
        """ "totp" or "recovery" when `code` is a valid, unspent one of the account (now spent)."""
        code = code.strip()[:64]
        if totp.is_code(code):
            return "totp" if self.factors.use_totp(user_id, code) else None
        return "recovery" if self.factors.use_recovery_code(user_id, code) else None

    # --- passkeys: signing in -----------------------------------------------------------------

    def begin_passkey_signin(self, mfa_token: str | None) -> tuple[str, dict[str, Any]]:
        """A passkey ceremony: email-free sign-in (no token), or the second step of a pending sign-in."""
        rp = self._rp()
        if mfa_token is None:
            self._require_passwordless()
            ceremony, raw = passkeys.begin("signin")
            return self._sealer.seal(ceremony), _ceremonies().authentication_options(rp, raw, [])
        row = self._pending(mfa_token)
        allowed = self.factors.passkeys_of(row.user_id)
        if not allowed:
            raise BadRequestError("This account has no passkey.", code="no_passkey")
        ceremony, raw = passkeys.begin("second-factor", user_id=row.user_id, pending=row.id)
        return self._sealer.seal(ceremony), _ceremonies().authentication_options(rp, raw, allowed)

    def finish_passkey_signin(self, token: str, credential: dict[str, Any], client: ClientInfo) -> SignedIn:
        """Finish either kind of passkey sign-in: the session, or 400 (429 when limited)."""
        ip_key = f"passkey-ip:{self._limiter.client_key(client.ip)}"
        self._limiter.check(self.policy.signin_ip, ip_key)
        with self._audit.attempt("auth.signin", detail="passkey") as entry:
            # As the password sign-in: check, verify and count under the address's lock, so that
            # concurrent failures from one address cannot all pass the check.
            with self._accounts.address_lock(ip_key):
                self._limiter.check(self.policy.signin_ip, ip_key)
                try:
                    ceremony = self._open_either(token)
                    passkey, user = self._assert(ceremony, credential)
                except BadRequestError:
                    self._limiter.count(self.policy.signin_ip, ip_key)
                    raise
            entry.subject = user.email
            if ceremony.purpose == "signin":
                self._require_passwordless()
                if not user.active:
                    raise PermissionDeniedError(ACCOUNT_DISABLED, code="account_disabled")
                return self._accounts.start_session(user, client, "passkey", mfa_at=_now())
            row = self._pending_by_id(ceremony.pending or "")
            if row.user_id != passkey.user_id:
                raise BadRequestError(TOKEN_INVALID, code="mfa_token_invalid")
            return self._finish_pending(row, "passkey", client)

    def _require_passwordless(self) -> None:
        """Email-free passkey sign-in is a local sign-in: off where ENABLE_PASSWORD_AUTH=false makes
        single sign-on the only way in (a passkey must not outlive the provider's say)."""
        if not self.policy.passwordless:
            raise PermissionDeniedError(
                "Sign-in with a passkey alone is disabled on this site; sign in with your provider.",
                code="passwordless_disabled",
            )

    def _open_either(self, token: str) -> passkeys.Ceremony:
        try:
            return self._sealer.open(token, "signin")
        except BadRequestError:
            return self._sealer.open(token, "second-factor")

    def _assert(self, ceremony: passkeys.Ceremony, credential: dict[str, Any]) -> tuple[Any, UserState]:
        """Check an assertion against the ceremony: the passkey used and its live owner."""
        rp = self._rp()
        passkey = self.factors.passkey_by_credential(passkeys.credential_id_of(credential))
        if passkey is None or (ceremony.user_id is not None and passkey.user_id != ceremony.user_id):
            raise BadRequestError(passkeys.PASSKEY_REFUSED, code="passkey_invalid")
        handle = passkeys.user_handle_of(credential)
        # WebAuthn §7.2 step 6: a discoverable credential must name its user, and it must be the one
        # the credential was registered for; with an allow list a handle, if any, must match too.
        if (handle is None and ceremony.user_id is None) or (
            handle is not None and handle != passkey.user_id.encode()
        ):
            raise BadRequestError(passkeys.PASSKEY_REFUSED, code="passkey_invalid")
        new_count = _ceremonies().verify_assertion(rp, credential, ceremony.challenge, passkey.public_key)
        self._consume(ceremony)
        user = self._accounts.current_user(passkey.user_id)
        if not self.factors.use_passkey(passkey.id, new_count):
            self._audit.record(
                "auth.passkey_clone_suspected",
                "refused",
                subject=user.email,
                detail=f"passkey={passkey.id[:8]} counter {new_count} <= {passkey.sign_count}",
            )
            raise BadRequestError(
                "This passkey's signature counter went backwards: it may have been copied. "
                "It was refused; remove it and register it again.",
                code="passkey_counter",
            )
        return passkey, user

    def _consume(self, ceremony: passkeys.Ceremony) -> None:
        """A ceremony's answer is accepted once, on every instance (the database's primary key)."""
        now = _now()
        try:
            with self._sessions() as db, db.begin():
                db.add(OAuthStateUse(id=f"passkey:{ceremony.id}"[:64], expires_at=now + 2 * 3600))
        except IntegrityError:
            raise BadRequestError(passkeys.CEREMONY_INVALID, code="passkey_ceremony_used") from None

    # --- enrolment (a signed-in person, about their own account) ----------------------------------

    def factors_of(self, user_id: str) -> Factors:
        """What the account has enrolled."""
        return self.factors.of(user_id)

    def setup_totp(self, user: UserState, claims: Claims) -> TotpSetup:
        """Begin setting up an authenticator app: a new secret, not in force until confirmed."""
        self._require_enrolment_allowed(user, claims)
        secret = self.factors.start_totp(user.id)
        return TotpSetup(secret, totp.provisioning_uri(secret, user.email, self.policy.issuer))

    def enable_totp(self, user: UserState, claims: Claims, code: str) -> list[str]:
        """Confirm the app with its first code; the account's new recovery codes (shown once)."""
        with self._audit.attempt("mfa.totp_enabled", actor=user.email, subject=user.email):
            self._require_enrolment_allowed(user, claims)
            self._limiter.hit(self.policy.codes, f"mfa:{user.id}")
            if not self.factors.confirm_totp(user.id, code.strip()[:64]):
                raise BadRequestError(CODE_INVALID, code="mfa_code_invalid")
            codes = self.factors.new_recovery_codes(user.id)
            self._mark_recent(claims)
            self._accounts.refresh_user(user.id)
            return codes

    def disable_totp(self, user: UserState, claims: Claims, code: str | None) -> None:
        """Turn the app off: with a current code, or a second factor shown in the last minutes."""
        with self._audit.attempt("mfa.totp_disabled", actor=user.email, subject=user.email):
            if code:
                self._limiter.hit(self.policy.codes, f"mfa:{user.id}")
                if self._check_code(user.id, code) is None:
                    raise BadRequestError(CODE_INVALID, code="mfa_code_invalid")
            else:
                self.require_step_up(user, claims)
            if not self.factors.remove_totp(user.id, keep_one=self._role_requires(user)):
                raise NotFoundError("No authenticator app is set up.")
            self._accounts.refresh_user(user.id)

    def regenerate_recovery_codes(self, user: UserState, claims: Claims) -> list[str]:
        """A new set of recovery codes; the old set stops working."""
        with self._audit.attempt("mfa.recovery_codes_regenerated", actor=user.email, subject=user.email):
            if not user.mfa:
                raise BadRequestError("Set up a second factor first.", code="no_second_factor")
            self.require_step_up(user, claims)
            return self.factors.new_recovery_codes(user.id)

    def begin_passkey_registration(self, user: UserState, claims: Claims) -> tuple[str, dict[str, Any]]:
        """A registration ceremony for a new passkey of this account."""
        rp = self._rp()
        self._require_enrolment_allowed(user, claims)
        ceremony, raw = passkeys.begin("register", user_id=user.id, session_id=claims.session_id)
        options = _ceremonies().registration_options(
            rp,
            raw,
            user_handle=user.id.encode(),
            email=user.email,
            name=user.name,
            existing=self.factors.passkeys_of(user.id),
        )
        return self._sealer.seal(ceremony), options

    def finish_passkey_registration(
        self, user: UserState, claims: Claims, token: str, name: str, credential: dict[str, Any]
    ) -> PasskeyAdded:
        """Store the verified passkey; recovery codes too when it is the account's first factor."""
        with self._audit.attempt("mfa.passkey_added", actor=user.email, subject=user.email):
            rp = self._rp()
            ceremony = self._sealer.open(token, "register")
            if ceremony.user_id != user.id or ceremony.session_id != claims.session_id:
                raise BadRequestError(passkeys.CEREMONY_INVALID, code="passkey_ceremony_invalid")
            self._require_enrolment_allowed(user, claims)
            new = _ceremonies().verify_registration(rp, credential, ceremony.challenge)
            self._consume(ceremony)
            first = not user.mfa
            added = self.factors.add_passkey(user.id, name, new)
            codes = self.factors.new_recovery_codes(user.id) if first else None
            self._mark_recent(claims)  # user verification on the new passkey was just shown
            self._accounts.refresh_user(user.id)
            return PasskeyAdded(added, codes)

    def remove_passkey(self, user: UserState, claims: Claims, passkey_id: str) -> None:
        """Remove one of the account's passkeys."""
        with self._audit.attempt("mfa.passkey_removed", actor=user.email, subject=user.email):
            self.require_step_up(user, claims)
            self.factors.remove_passkey(user.id, passkey_id, keep_one=self._role_requires(user))
            self._accounts.refresh_user(user.id)

    def _role_requires(self, user: UserState) -> bool:
        return user.role in self.policy.required_roles

    # --- step-up ----------------------------------------------------------------------------------

    def step_up(self, user: UserState, claims: Claims, code: str) -> int:
        """Show a second factor in this session (a code); until when it counts as recent."""
        with self._audit.attempt("auth.mfa_step_up", actor=user.email, subject=user.email, detail="code"):
            self._limiter.hit(self.policy.codes, f"mfa:{user.id}")
            if self._check_code(user.id, code) is None:
                raise BadRequestError(CODE_INVALID, code="mfa_code_invalid")
            return self._mark_recent(claims)

    def begin_passkey_step_up(self, user: UserState, claims: Claims) -> tuple[str, dict[str, Any]]:
        """A passkey ceremony to show a second factor in this session."""
        rp = self._rp()
        allowed = self.factors.passkeys_of(user.id)
        if not allowed:
            raise BadRequestError("This account has no passkey.", code="no_passkey")
        ceremony, raw = passkeys.begin("step-up", user_id=user.id, session_id=claims.session_id)
        return self._sealer.seal(ceremony), _ceremonies().authentication_options(rp, raw, allowed)

    def finish_passkey_step_up(
        self, user: UserState, claims: Claims, token: str, credential: dict[str, Any]
    ) -> int:
        """Finish the step-up with a passkey; until when it counts as recent."""
        with self._audit.attempt("auth.mfa_step_up", actor=user.email, subject=user.email, detail="passkey"):
            self._limiter.hit(self.policy.codes, f"mfa:{user.id}")
            ceremony = self._sealer.open(token, "step-up")
            if ceremony.user_id != user.id or ceremony.session_id != claims.session_id:
                raise BadRequestError(passkeys.CEREMONY_INVALID, code="passkey_ceremony_invalid")
            self._assert(ceremony, credential)
            return self._mark_recent(claims)

    def _mark_recent(self, claims: Claims) -> int:
        now = _now()
        with self._sessions() as db, db.begin():
            db.execute(update(AuthSession).where(AuthSession.id == claims.session_id).values(mfa_at=now))
        return now + self.policy.step_up_max_age

    # --- housekeeping -----------------------------------------------------------------------------

    def prune(self, now: int, stopping: threading.Event) -> int:
        """Delete pending sign-ins and spent ceremony ids past their time (a housekeeping job)."""
        pending = prune_before(self._sessions, PendingSignin.expires_at, now, stopping=stopping)
        return pending + prune_before(self._sessions, OAuthStateUse.expires_at, now, stopping=stopping)

    # --- administration ---------------------------------------------------------------------------

    def reset(self, actor: UserState, user_id: str) -> None:
        """An admin removes every factor of an account; its sessions and API keys end with them."""
        target = self._accounts.refresh_user(user_id).email
        with self._audit.attempt("mfa.reset", actor=actor.email, subject=target):
            self.factors.remove_all(user_id)
            self._accounts.revoke_all_sessions(user_id, actor=actor.email)
