"""Forgot password: a reset link by email, single use, short-lived, bound to the current password.

The link carries `<user id>.<expiry>.<MAC>`, the MAC an HMAC-SHA256 over the user id, the expiry
and the account's *current* password hash, under a key derived from the site's secret for this
purpose alone (`security.keys`; signed with the current secret, checked against each of
`WEBUI_SECRET_KEY_FALLBACKS` too). Nothing is stored: once the password changes — through this link,
the account page or an admin — the hash changes and every link made before stops verifying, which is
what makes a link single-use (OWASP Forgot Password Cheat Sheet: single use, short expiry, no user
enumeration). The hash is swapped compare-and-set, so two uses of one link at once cannot both win.

A request gets the same answer and the same work whether or not the address is an account's (the
email is sent after the answer, in the background), and is limited per client address (refused,
with the wait) and per email address (quietly: no more mail to that address for a while, so that
nobody can flood a mailbox). Accounts without a password of their own here (single sign-on or LDAP
only) get no link: their password lives with their provider. Nor do disabled accounts. Using a link
ends every session and API key of the account (`AccountService.revoke_all_sessions`); a second
factor stays as it was and is asked for at the next sign-in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from wardgate.audit.log import AuditLog
from wardgate.config.settings import Settings
from wardgate.errors import BadRequestError, RateLimitedError
from wardgate.identity.accounts import AccountService
from wardgate.identity.mail import MailServer, SmtpMailer
from wardgate.identity.records import ClientInfo
from wardgate.identity.validation import normalise_email
from wardgate.security.keys import secret_ring
from wardgate.security.passwords import PasswordHasher
from wardgate.security.ratelimit import Limit, RateLimiter
from wardgate.storage.models import User

# The HKDF label of the link's key (RFC 5869 `info`): used for nothing else.
PASSWORD_RESET_LINK = b"wardgate/password-reset-link/v1"
LINK_NOT_VALID = (
    "This reset link does not work any more: it was used already, it expired, or the password was "
    "changed since it was sent. Ask for a new one below."
)
# user id (a UUID), expiry (Unix seconds), MAC (32 bytes in unpadded base64url); ASCII only.
_TOKEN = re.compile(r"([0-9a-fA-F-]{32,36})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})", re.ASCII)


@dataclass(frozen=True, slots=True)
class ResetPolicy:
    """Where links point, how long they work and how often they may be asked for."""

    link_base: str  # WEBUI_URL + WARDGATE_PATH_PREFIX: the link is `{link_base}/auth/reset?token=...`
    site_name: str  # WEBUI_NAME, in the email
    lifetime: int  # seconds (PASSWORD_RESET_EXPIRES_IN)
    per_address: Limit  # PASSWORD_RESET_RATE_LIMIT, per email address
    per_client: Limit  # the same rate, per client address

    @property
    def minutes(self) -> int:
        """The lifetime as people read it."""
        return max(1, self.lifetime // 60)


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """The account a valid link resets: shown on the form (for password managers)."""

    user_id: str
    email: str


class LinkSigner:
    """Makes and checks link tokens: signed with the first key, checked against every key."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        self._keys = tuple(keys)

    def token(self, user_id: str, expires: int, password_hash: str, email: str) -> str:
        """The token for this account, expiry, current password hash and current address (a link
        mailed to an address the account no longer has stops working, as after a password change)."""
        return f"{user_id}.{expires}.{self._mac(self._keys[0], user_id, expires, password_hash, email)}"

    def parse(self, token: str) -> tuple[str, int, str] | None:
        """(user id, expiry, MAC) of a well-formed token, else None (anything not ASCII included)."""
        found = _TOKEN.fullmatch(token.strip())
        if found is None:
            return None
        try:
            user_id = str(uuid.UUID(found.group(1)))
        except ValueError:
            return None
        return user_id, int(found.group(2)), found.group(3)

    def verify(self, user_id: str, expires: int, mac: str, password_hash: str, email: str) -> bool:
        """True when one of the keys made `mac` for these values (compared in constant time)."""
        given = mac.encode("ascii")
        found = False
        for key in self._keys:  # every key, always: the time does not say which one matched
            made = self._mac(key, user_id, expires, password_hash, email).encode("ascii")
            found |= hmac.compare_digest(given, made)
        return found

    @staticmethod
    def _mac(key: bytes, user_id: str, expires: int, password_hash: str, email: str) -> str:
        fields = (user_id, str(expires), password_hash, email)
        message = b"\x00".join(field.encode() for field in fields)
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class PasswordResets:
    """Asking for a reset link, checking one, and setting the new password with it."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        accounts: AccountService,
        hasher: PasswordHasher,
        signer: LinkSigner,
        mailer: SmtpMailer,
        limiter: RateLimiter,
        audit: AuditLog,
        policy: ResetPolicy,
    ) -> None:
        self._sessions = sessions
        self._accounts = accounts
        self._hasher = hasher
        self._signer = signer
        self.mailer = mailer
        self._limiter = limiter
        self._audit = audit
        self.policy = policy

    def request(self, email: str, client: ClientInfo) -> EmailMessage | None:
        """The email to send for a request (None when nothing is sent). The caller answers the same
        either way and sends it afterwards (`mailer.send`, in a worker thread). RateLimitedError
        when this client asked too often."""
        p = self.policy
        self._limiter.hit(p.per_client, f"password-reset-ip:{self._limiter.client_key(client.ip)}")
        try:
            address = normalise_email(email)
        except BadRequestError:
            raise BadRequestError("Enter the email address of your account.", code="invalid_email") from None
        row = self._account(address)
        expires = int(time.time()) + p.lifetime
        # The same work whether or not the address has an account (the answer's time must not
        # tell): the address's bucket is counted, a token made and a message composed either way.
        token = self._signer.token(row.id if row else str(uuid.UUID(int=0)), expires, _hash_of(row), address)
        message = self._message(address, token)
        reason: str | None = None
        try:
            self._limiter.hit(p.per_address, f"password-reset:{address}")
        except RateLimitedError:  # quietly: no more mail to this address for a while
            reason = "rate_limited"
        if row is None or row.password_hash is None or not row.active:
            reason = "no account" if row is None else "no password here" if row.active else "disabled"
        if reason is not None:
            subject = row.email if row is not None else None
            self._audit.record("auth.password_reset_requested", "refused", subject=subject, detail=reason)
            return None
        self._audit.record("auth.password_reset_requested", "success", subject=row.email if row else None)
        return message

    def check(self, token: str) -> ResetTarget:
        """The account a link resets, or BadRequestError (`LINK_NOT_VALID`) when it does not."""
        return self._checked(token)[0]

    def _checked(self, token: str) -> tuple[ResetTarget, str]:
        """The account a link resets and the password hash the link was checked against."""
        parsed = self._signer.parse(token)
        if parsed is None:
            raise BadRequestError(LINK_NOT_VALID, code="reset_link_invalid")
        user_id, expires, mac = parsed
        with self._sessions() as db:
            row = db.get(User, user_id)
        if row is None or row.password_hash is None or not row.active or expires < time.time():
            raise BadRequestError(LINK_NOT_VALID, code="reset_link_invalid")
        if not self._signer.verify(user_id, expires, mac, row.password_hash, row.email):
            raise BadRequestError(LINK_NOT_VALID, code="reset_link_invalid")
        return ResetTarget(row.id, row.email), row.password_hash

    def complete(self, token: str, new_password: str) -> ResetTarget:
        """Set the new password with a valid link; every session and API key of the account ends."""
        with self._audit.attempt("auth.password_reset") as entry:
            target, verified = self._checked(token)
            entry.subject = target.email
            self._accounts.policy.passwords.check(new_password)
            new_hash = self._hasher.hash(new_password)
            # Compare-and-set on the very hash the link was checked against: of two uses of one
            # link, the second finds the hash changed and fails, however they interleave.
            with self._sessions() as db, db.begin():
                swapped = db.execute(
                    update(User)
                    .where(User.id == target.user_id, User.password_hash == verified)
                    .values(password_hash=new_hash, updated_at=int(time.time()))
                )
            if swapped.rowcount != 1:  # type: ignore[attr-defined]
                raise BadRequestError(LINK_NOT_VALID, code="reset_link_invalid")
            self._accounts.revoke_all_sessions(target.user_id, actor=target.email)
            return target

    def mail_failed(self, to: str, reason: str) -> None:
        """Record that a link could not be sent (the person was told to check their inbox)."""
        self._audit.record("auth.password_reset_mail", "failure", subject=to, detail=reason)

    def _account(self, address: str) -> User | None:
        with self._sessions() as db:
            return db.scalar(select(User).where(User.email == address))

    def _message(self, to: str, token: str) -> EmailMessage:
        p = self.policy
        link = f"{p.link_base}/auth/reset?token={token}"
        body = (
            f"Someone, hopefully you, asked to reset the password of your {p.site_name} account ({to}).\n\n"
            f"To choose a new password, open this link within {p.minutes} minutes:\n\n{link}\n\n"
            "The link works once. Using it signs you out everywhere.\n\n"
            "If you did not ask for this, ignore this email: your password stays as it is.\n"
        )
        return self.mailer.compose(to, f"Reset your {p.site_name} password", body)


def _hash_of(row: User | None) -> str:
    return (row.password_hash or "") if row is not None else ""


def password_resets_from_settings(
    s: Settings,
    accounts: AccountService,
    sessions: sessionmaker[Session],
    limiter: RateLimiter,
    audit: AuditLog,
) -> PasswordResets | None:
    """The reset service for these settings; None without `SMTP_HOST` or without password sign-in
    (the settings check refuses SMTP_HOST without SMTP_FROM and WEBUI_URL)."""
    if not s.smtp_host or not s.smtp_from or not s.webui_url or not s.enable_password_auth:
        return None
    server = MailServer(
        host=s.smtp_host,
        port=s.smtp_port,
        security=s.smtp_security,
        sender=s.smtp_from,
        username=s.smtp_username,
        password=s.smtp_password.get_secret_value() if s.smtp_password else "",
        ca_file=s.smtp_ca_cert_file,
        timeout=s.smtp_timeout,
    )
    ring = secret_ring(s)
    rate = s.password_reset_rate_limit
    policy = ResetPolicy(
        link_base=s.webui_url.rstrip("/") + s.route_prefix,
        site_name=s.webui_name,
        lifetime=int(s.password_reset_expires_in.total_seconds()),
        per_address=Limit.of("password-reset", rate),
        per_client=Limit.of("password-reset-ip", rate),
    )
    return PasswordResets(
        sessions,
        accounts,
        PasswordHasher(max_concurrent=s.password_hash_concurrency),
        LinkSigner([key for _kid, key in ring.derived(PASSWORD_RESET_LINK)]),
        SmtpMailer(server),
        limiter,
        audit,
        policy,
    )
