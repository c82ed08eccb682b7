"""What an account has enrolled, in the database every instance shares: the TOTP secret, recovery
codes and passkeys, and the `users.mfa_enabled` flag that the revocation view carries to every
request. Every write that changes whether an account has a factor updates that flag and logs a user
change in the same transaction, so every instance learns it as it learns a role change.

Single use holds across instances because it is decided by one conditional UPDATE each: a TOTP step
only when it is later than the last accepted one, a recovery code only while it is unused.

Key rotation: TOTP secrets open under any configured key and are re-encrypted under the newest as
they are used; recovery codes are found under any secret of the ring (`recovery`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from wardgate.errors import BadRequestError, ConflictError, NotFoundError
from wardgate.mfa import recovery, totp
from wardgate.mfa.passkeys import NewPasskey, counter_went_back
from wardgate.security.keys import FernetRing
from wardgate.sessions.changes import log_user_change
from wardgate.storage.models import Passkey, RecoveryCode, TotpFactor, User

MAX_PASSKEYS = 20  # per account
LAST_FACTOR = "Your role requires a second factor: add another one before removing this one."


@dataclass(frozen=True, slots=True)
class PasskeyInfo:
    """A passkey as its owner sees it (never its key material)."""

    id: str
    name: str
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True, slots=True)
class Factors:
    """An account's second factors, as listed to its owner and its admins (never a secret)."""

    totp: bool
    passkeys: tuple[PasskeyInfo, ...]
    recovery_codes_left: int

    @property
    def methods(self) -> tuple[str, ...]:
        """The ways to pass the second step, in the order the API names them."""
        found = []
        if self.totp:
            found.append("totp")
        if self.passkeys:
            found.append("webauthn")
        if self.recovery_codes_left and (self.totp or self.passkeys):
            found.append("recovery")
        return tuple(found)

    @property
    def any(self) -> bool:
        """Whether the account has a second factor at all."""
        return self.totp or bool(self.passkeys)


def _now() -> int:
    return int(time.time())


def _lock_account(db: Session, user_id: str) -> None:
    """The first statement of every factor write: the account's row lock, so that two changes of
    one account's factors run one after the other and `_mark` sees the other's result."""
    db.execute(select(User.id).where(User.id == user_id).with_for_update())


def _confirmed_totp(user_id: str) -> Select[str]:
    return select(TotpFactor.user_id).where(
        TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None)
    )


class FactorStore:
    """The factor rows of every account."""

    def __init__(
        self, sessions: sessionmaker[Session], keys: Sequence[bytes], hasher: recovery.RecoveryCodeHasher
    ) -> None:
        """`keys`: Fernet keys for the TOTP secrets, newest first (older ones still decrypt)."""
        self._sessions = sessions
        self._cipher = FernetRing(keys)
        self._hasher = hasher

    # --- reading ------------------------------------------------------------------------------

    def of(self, user_id: str) -> Factors:
        """Everything `user_id` has enrolled."""
        with self._sessions() as db:
            confirmed = db.scalar(_confirmed_totp(user_id))
            keys = db.scalars(
                select(Passkey).where(Passkey.user_id == user_id).order_by(Passkey.created_at, Passkey.id)
            ).all()
            left = db.scalar(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            )
        return Factors(
            totp=confirmed is not None,
            passkeys=tuple(PasskeyInfo(k.id, k.name, k.created_at, k.last_used_at) for k in keys),
            recovery_codes_left=int(left or 0),
        )

    def kinds_of(self, user_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """For a page of accounts: which kinds of factor each has ("totp", "webauthn"), in two
        indexed queries whatever the page's size."""
        ids = list(user_ids)
        with self._sessions() as db:
            totp_users = set(
                db.scalars(
                    select(TotpFactor.user_id).where(
                        TotpFactor.user_id.in_(ids), TotpFactor.confirmed_at.is_not(None)
                    )
                )
            )
            passkey_users = set(
                db.scalars(select(Passkey.user_id).where(Passkey.user_id.in_(ids)).distinct())
            )
        return {
            uid: tuple(
                k for k, has in (("totp", uid in totp_users), ("webauthn", uid in passkey_users)) if has
            )
            for uid in ids
        }

    def recovery_codes_by_secret(self) -> dict[str | None, int]:
        """Accounts holding unused recovery codes, by the key id of the secret their digests are under
        (None: made before key ids were stored). Codes under a dropped secret no longer work."""
        with self._sessions() as db:
            rows = db.execute(
                select(RecoveryCode.key_id, func.count(func.distinct(RecoveryCode.user_id)))
                .where(RecoveryCode.used_at.is_(None))
                .group_by(RecoveryCode.key_id)
            ).all()
        return {kid: int(count) for kid, count in rows}

    def totp_secrets_behind(self) -> tuple[int, int]:
        """(TOTP secrets under an older key, re-encrypted at their next use; secrets no configured key
        opens). For `wardgate check --keys`: it decrypts every secret, in memory, and shows none."""
        behind = unreadable = 0
        with self._sessions() as db:
            for (sealed,) in db.execute(select(TotpFactor.ciphertext)):
                try:
                    behind += self._cipher.open(sealed.encode("ascii"))[1] is not None
                except InvalidToken:
                    unreadable += 1
        return behind, unreadable

    def passkeys_of(self, user_id: str) -> list[tuple[str, tuple[str, ...]]]:
        """(credential id, transports) of each passkey of `user_id`."""
        with self._sessions() as db:
            rows = db.execute(
                select(Passkey.credential_id, Passkey.transports).where(Passkey.user_id == user_id)
            ).all()
        return [(cid, tuple((transports or "").split())) for cid, transports in rows]

    def passkey_by_credential(self, credential_id: str) -> Passkey | None:
        """The passkey with this credential id, if any."""
        with self._sessions() as db:
            return db.scalar(select(Passkey).where(Passkey.credential_id == credential_id))

    # --- TOTP -----------------------------------------------------------------------------------

    def start_totp(self, user_id: str) -> str:
        """A new secret, stored encrypted and unconfirmed (replacing an unconfirmed one); ConflictError
        when an authenticator app is already enabled."""
        secret = totp.new_secret()
        sealed = self._cipher.encrypt(secret.encode("ascii")).decode("ascii")
        with self._sessions() as db, db.begin():
            row = db.get(TotpFactor, user_id, with_for_update=True)
            if row is not None and row.confirmed_at is not None:
                raise ConflictError(
                    "An authenticator app is already set up; turn it off first to replace it.",
                    code="totp_already_enabled",
                )
            if row is None:
                db.add(TotpFactor(user_id=user_id, ciphertext=sealed, last_step=0, created_at=_now()))
            else:
                row.ciphertext, row.last_step, row.created_at = sealed, 0, _now()
        return secret

    def _secret(self, row: TotpFactor) -> str | None:
        """The decrypted secret; re-encrypted under the newest key when an older one opened it."""
        try:
            secret, resealed = self._cipher.open(row.ciphertext.encode("ascii"))
        except InvalidToken:
            return None  # no configured key opens it: the factor cannot be used (an admin resets it)
        if resealed is not None:
            row.ciphertext = resealed.decode("ascii")  # written with the caller's commit
        return secret.decode("ascii")

    def use_totp(self, user_id: str, code: str, *, confirmed: bool = True) -> bool:
        """Whether `code` is the account's current TOTP code and not spent; spends its step."""
        with self._sessions() as db, db.begin():
            row = db.get(TotpFactor, user_id, with_for_update=True)
            if row is None or (row.confirmed_at is not None) != confirmed:
                return False
            secret = self._secret(row)
            step = totp.matching_step(secret, code, time.time()) if secret else None
            if step is None:
                return False
            spent = db.execute(
                update(TotpFactor)
                .where(TotpFactor.user_id == user_id, TotpFactor.last_step < step)
                .values(last_step=step)
            )
            return bool(spent.rowcount == 1)  # type: ignore[attr-defined]

    def confirm_totp(self, user_id: str, code: str) -> bool:
        """Enable the unconfirmed secret when `code` matches it; False otherwise."""
        if not self.use_totp(user_id, code, confirmed=False):
            return False
        with self._sessions() as db, db.begin():
            _lock_account(db, user_id)
            confirmed = db.execute(
                update(TotpFactor)
                .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_(None))
                .values(confirmed_at=_now())
            )
            if confirmed.rowcount != 1:  # type: ignore[attr-defined]
                return False
            self._mark(db, user_id)
        return True

    def remove_totp(self, user_id: str, *, keep_one: bool = False) -> bool:
        """Turn the authenticator app off; whether there was one. `keep_one`: refused (400) when
        it is the account's last factor (a role that requires one)."""
        with self._sessions() as db, db.begin():
            _lock_account(db, user_id)
            if keep_one and not db.scalar(select(Passkey.id).where(Passkey.user_id == user_id).limit(1)):
                raise BadRequestError(LAST_FACTOR, code="mfa_required_for_role")
            gone = db.execute(delete(TotpFactor).where(TotpFactor.user_id == user_id))
            self._mark(db, user_id)
        return bool(gone.rowcount)  # type: ignore[attr-defined]

    # --- recovery codes -------------------------------------------------------------------------

    def new_recovery_codes(self, user_id: str) -> list[str]:
        """A fresh set of codes; the previous set ends with it."""
        codes = recovery.new_codes()
        digests = [self._hasher.digest(code) for code in codes]
        kid = self._hasher.current_id
        with self._sessions() as db, db.begin():
            _lock_account(db, user_id)
            db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
            db.add_all(RecoveryCode(user_id=user_id, code_hash=d, key_id=kid) for d in digests if d)
        return codes

    def has_recovery_codes(self, user_id: str) -> bool:
        """Whether any unused recovery code is left."""
        return self.of(user_id).recovery_codes_left > 0

    def use_recovery_code(self, user_id: str, code: str) -> bool:
        """Whether `code` is an unused recovery code of `user_id`; spends it."""
        digests = self._hasher.digests(code)  # one per secret of the ring: a code made under any
        if not digests:
            return False
        with self._sessions() as db, db.begin():
            used = db.execute(
                update(RecoveryCode)
                .where(
                    RecoveryCode.user_id == user_id,
                    RecoveryCode.code_hash.in_(digests),
                    RecoveryCode.used_at.is_(None),
                )
                .values(used_at=_now())
            )
            return bool(used.rowcount == 1)  # type: ignore[attr-defined]

    # --- passkeys -------------------------------------------------------------------------------

    def add_passkey(self, user_id: str, name: str, new: NewPasskey) -> PasskeyInfo:
        """Store a verified passkey; ConflictError when it is registered already or too many exist."""
        now = _now()
        row = Passkey(
            id=str(uuid.uuid4()),
            user_id=user_id,
            credential_id=new.credential_id,
            name=name,
            public_key=new.public_key,
            sign_count=new.sign_count,
            transports=" ".join(new.transports) or None,
            created_at=now,
        )
        try:
            with self._sessions() as db, db.begin():
                _lock_account(db, user_id)
                count = db.scalar(select(func.count()).select_from(Passkey).where(Passkey.user_id == user_id))
                if (count or 0) >= MAX_PASSKEYS:
                    raise ConflictError(
                        f"An account can have at most {MAX_PASSKEYS} passkeys; remove one first.",
                        code="too_many_passkeys",
                    )
                db.add(row)
                db.flush()
                self._mark(db, user_id)
        except IntegrityError:
            raise ConflictError("This passkey is already registered.", code="passkey_exists") from None
        return PasskeyInfo(row.id, row.name, now, None)

    def use_passkey(self, passkey_id: str, new_count: int) -> bool:
        """Record a use; False (and no change) when the counter did not grow — a possible clone."""
        with self._sessions() as db, db.begin():
            row = db.get(Passkey, passkey_id, with_for_update=True)
            if row is None or counter_went_back(row.sign_count, new_count):
                return False
            row.sign_count, row.last_used_at = new_count, _now()
        return True

    def remove_passkey(self, user_id: str, passkey_id: str, *, keep_one: bool = False) -> str:
        """Remove one of the account's passkeys (404 for anyone else's); its name. `keep_one`: as
        for `remove_totp`."""
        with self._sessions() as db, db.begin():
            _lock_account(db, user_id)
            row = db.get(Passkey, passkey_id)
            if row is None or row.user_id != user_id:
                raise NotFoundError("Passkey not found.")
            if keep_one:
                others = db.scalar(
                    select(func.count()).select_from(Passkey).where(Passkey.user_id == user_id)
                )
                if (others or 0) <= 1 and db.scalar(_confirmed_totp(user_id)) is None:
                    raise BadRequestError(LAST_FACTOR, code="mfa_required_for_role")
            name = row.name
            db.delete(row)
            db.flush()
            self._mark(db, user_id)
        return name

    # --- all of them ------------------------------------------------------------------------------

    def remove_all(self, user_id: str) -> None:
        """Every factor and recovery code of the account (an admin's reset)."""
        with self._sessions() as db, db.begin():
            _lock_account(db, user_id)
            for table in (TotpFactor, RecoveryCode, Passkey):
                db.execute(delete(table).where(table.user_id == user_id))
            self._mark(db, user_id)

    @staticmethod
    def _mark(db: Session, user_id: str) -> None:
        """Set `users.mfa_enabled` from the factor rows, in the caller's transaction; with no factor
        left the recovery codes go too (they recover a factor, not replace one)."""
        has_totp = db.scalar(
            select(TotpFactor.user_id).where(
                TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None)
            )
        )
        has_passkey = db.scalar(select(Passkey.id).where(Passkey.user_id == user_id).limit(1))
        enabled = has_totp is not None or has_passkey is not None
        if not enabled:
            db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        db.execute(update(User).where(User.id == user_id).values(mfa_enabled=enabled))
        log_user_change(db, [user_id])
