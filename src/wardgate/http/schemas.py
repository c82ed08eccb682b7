"""Request and response bodies, shaped like Open WebUI's so its clients and scripts keep working."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wardgate.config.model_access import MAX_TOKENS, Budget
from wardgate.config.values import Role
from wardgate.storage.paging import COUNT_CAP

# The last second of year 9999: every Unix time a request carries is at most this, so that no
# value overflows a database integer (or a datetime) on its way in.
LAST_UNIX_TIME = 253_402_300_799


class ErrorBody(BaseModel):
    """Every refusal: `{"detail": "..."}`."""

    detail: str


class SigninForm(BaseModel):
    """POST /api/v1/auths/signin."""

    model_config = ConfigDict(str_max_length=4096)
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)


class LdapForm(BaseModel):
    """POST /api/v1/auths/ldap (Open WebUI's shape): the directory name and password."""

    model_config = ConfigDict(str_max_length=4096)
    user: str = Field(max_length=256)
    password: str = Field(max_length=4096)


class SignupForm(BaseModel):
    """POST /api/v1/auths/signup."""

    name: str = Field(max_length=255)
    email: str = Field(max_length=320)
    password: str = Field(max_length=4096)
    profile_image_url: str | None = Field(None, max_length=512)


class AddUserForm(SignupForm):
    """POST /api/v1/auths/add (admin)."""

    role: Role = Role.PENDING


class UpdatePasswordForm(BaseModel):
    """POST /api/v1/auths/update/password."""

    password: str = Field(max_length=4096)
    new_password: str = Field(max_length=4096)


class TokenBudget(BaseModel):
    """A token allowance per calendar period (UTC): `1h` the hour, `1d` the day, `7d` the week from
    Monday, `30d` the calendar month. A field this version does not know is refused."""

    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(ge=0, le=MAX_TOKENS)
    period: Literal["1h", "1d", "7d", "30d"]
    requests: int | None = Field(None, ge=0, le=MAX_TOKENS, description="Optionally, requests per period.")

    def budget(self) -> Budget:
        return Budget(self.tokens, self.period, self.requests)

    @classmethod
    def of(cls, budget: Budget | None) -> TokenBudget | None:
        return None if budget is None else cls(**budget.as_dict())

    @classmethod
    def of_json(cls, text: str | None) -> TokenBudget | None:
        return cls.model_validate_json(text) if text else None


class UserUpdateForm(BaseModel):
    """POST /api/v1/users/{id}/update (admin); absent fields stay as they are. A field this version
    does not know is refused: an edit meant to narrow what a person may do must not be half-done."""

    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    name: str | None = Field(None, max_length=255)
    email: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=4096)
    profile_image_url: str | None = Field(None, max_length=512)
    active: bool | None = None
    allowed_models: list[str] | None = Field(
        None,
        max_length=256,
        description="Model names or globs this person may use; null: inherit from role and groups.",
    )
    token_budget: TokenBudget | None = Field(
        None, description="The person's own budget; null: none of their own."
    )


class UserModel(BaseModel):
    """An account as the API shows it (never a hash or a stamp)."""

    id: str
    email: str
    name: str
    role: Role
    active: bool
    profile_image_url: str
    created_at: int
    updated_at: int
    last_active_at: int | None = None
    allowed_models: list[str] | None = None
    token_budget: TokenBudget | None = None
    mfa_enabled: bool = False  # has a second factor (which ones: the admin page)


class UserList(BaseModel):
    """GET /api/v1/users/."""

    users: list[UserModel]
    total: int = Field(description=f"Matching accounts, counted up to {COUNT_CAP + 1} (more: at least that)")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last")


class SessionUser(BaseModel):
    """The session user (GET /api/v1/auths/) and the result of sign-in and sign-up."""

    token: str
    token_type: str = "Bearer"  # noqa: S105
    expires_at: int | None
    id: str
    email: str
    name: str
    role: Role
    profile_image_url: str
    permissions: dict[str, object] = Field(default_factory=dict)


class AddedUser(BaseModel):
    """POST /api/v1/auths/add."""

    id: str
    email: str
    name: str
    role: Role
    profile_image_url: str


class SignoutResult(BaseModel):
    """GET/POST /api/v1/auths/signout."""

    status: bool = True
    redirect_url: str | None = None


class SessionInfo(BaseModel):
    """One of the caller's signed-in sessions."""

    id: str
    current: bool
    auth_method: str
    created_at: int
    expires_at: int | None
    last_seen_at: int
    ip: str | None
    user_agent: str | None


class Health(BaseModel):
    """GET /health."""

    status: bool
    database: Literal["ok", "unavailable"] | None = None
    sessions: Literal["synchronised", "stale"] | None = None
    rate_limits: str | None = None
    revocation_channel: Literal["connected", "disconnected", "not configured"] | None = None


# --- second factors (wardgate's own; Open WebUI has none) -----------------------------------------


class _Strict(BaseModel):
    """A request body whose unknown fields are refused (a typo must not silently do less)."""

    model_config = ConfigDict(extra="forbid", str_max_length=4096)


class MfaRequiredResult(BaseModel):
    """POST /api/v1/auths/signin for an account with a second factor: no session yet."""

    mfa_required: Literal[True] = True
    mfa_token: str
    methods: list[str]


class MfaCodeForm(_Strict):
    """POST /api/v1/auths/mfa/verify: the pending sign-in's token and a TOTP or recovery code."""

    mfa_token: str = Field(max_length=128)
    code: str = Field(max_length=64)


class CodeForm(_Strict):
    """A TOTP or recovery code (enable, step-up)."""

    code: str = Field(max_length=64)


class OptionalCodeForm(_Strict):
    """POST /api/v1/auths/mfa/totp/disable: a current code, or none after a recent step-up."""

    code: str | None = Field(None, max_length=64)


class EmptyForm(_Strict):
    """A request with nothing to say (its body may be `{}` or absent)."""


class TotpSetupResult(BaseModel):
    """The new secret, as text and as the address an authenticator app reads from a QR code."""

    secret: str
    otpauth_uri: str


class RecoveryCodes(BaseModel):
    """Recovery codes, shown this once."""

    recovery_codes: list[str]


class StepUpResult(BaseModel):
    """Until when this session counts as having shown a second factor (Unix time)."""

    step_up_until: int


class PasskeyOut(BaseModel):
    """A passkey of the account (never key material)."""

    id: str
    name: str
    created_at: int
    last_used_at: int | None


class MfaStatus(BaseModel):
    """GET /api/v1/auths/mfa: the account's factors, never a secret."""

    methods: list[str]
    totp: bool
    passkeys: list[PasskeyOut]
    recovery_codes_left: int
    required: bool  # the account's role requires a second factor (MFA_REQUIRED_ROLES)
    step_up_until: int | None  # this session's recent second factor counts until then
    passkeys_available: bool  # WEBUI_URL names a host passkeys can be bound to


class CeremonyStart(BaseModel):
    """A begun passkey ceremony: its token, and the options for the browser's WebAuthn call."""

    ceremony: str
    options: dict[str, object]


class PasskeySigninBegin(_Strict):
    """Begin a passkey sign-in: with `mfa_token` as the second step, without it email-free."""

    mfa_token: str | None = Field(None, max_length=128)


class PasskeyAssertion(_Strict):
    """A ceremony's token and the browser's answer (PublicKeyCredential as JSON)."""

    ceremony: str = Field(max_length=2048)
    credential: dict[str, object]


class PasskeyRegistration(PasskeyAssertion):
    """A new passkey's answer and the name its owner gives it."""

    name: str = Field("Passkey", min_length=1, max_length=64)


class PasskeyAddedResult(BaseModel):
    """The new passkey; recovery codes when it is the account's first factor (shown once)."""

    passkey: PasskeyOut
    recovery_codes: list[str] | None
