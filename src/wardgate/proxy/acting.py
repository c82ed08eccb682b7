"""Service keys acting for people: Open WebUI's server calls the model servers for the person chatting.

In the deployment wardgate is built for, people sign in at wardgate and use Open WebUI behind it, and
every model call leaves Open WebUI's *server*. With one API key for that server, all usage would land
on the key. An admin therefore marks a key as a **service key** (`acts_for_users`), and each call
made with it names the person it is for, the way Open WebUI 0.12 forwards it
(`ENABLE_FORWARD_USER_INFO_HEADERS=true`):

- signed, when `FORWARD_USER_INFO_HEADER_JWT_SECRET` is set here (and, with the same value, in Open
  WebUI): an HS256 JWT in `X-OpenWebUI-User-Jwt` with `email`, `iss: open-webui` and `exp`. Only
  HS256 is accepted (RFC 8725 §3.1: the algorithm is fixed by the verifier, never read from the
  token, so `alg: none` and key-confusion tricks fail), the issuer and the expiry are required, and
  the plain headers are refused, so that a leaked service key alone cannot name anyone;
- plain, only while no secret is configured: `X-OpenWebUI-User-Email` (its `-Id`, `-Name` and
  `-Role` are Open WebUI's own facts and are not used: wardgate's account decides);
- and `X-OpenWebUI-Chat-Id`, recorded with the usage.

The person is found by email (Open WebUI's `sub` is its own id, not wardgate's) and must have an
account here that is active and approved; otherwise the call is refused (403), never charged to the
service key instead. The call then goes on as that person's: their model rules and budgets (and the
key's own narrowing), the identity headers the upstream receives, the usage record (with the key and
the chat id). A service key call that names nobody is refused too: the key acts for people, never
for its owner, so Open WebUI's server holds no administrator's power over the model servers.

These headers mean something only with a service key; from anyone else they are removed before the
upstream (`wardgate.proxy.identity`) and ignored, so a person cannot charge another with them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeGuard

import anyio.to_thread
import jwt

from wardgate.config.settings import Settings
from wardgate.config.values import Role
from wardgate.errors import BadRequestError, PermissionDeniedError
from wardgate.identity.authentication import Caller, KeyPrincipal
from wardgate.identity.rules import PENDING_APPROVAL
from wardgate.identity.validation import exact_address
from wardgate.sessions.records import MODEL_SERVERS, UserState
from wardgate.sessions.registry import SessionRegistry

ISSUER = "open-webui"  # Open WebUI's `_mint_forward_user_jwt`
LEEWAY = 30  # seconds of clock difference allowed on `exp` and `iat` between the two servers
MAX_TOKEN = 4096  # characters: Open WebUI's token is ~300; anything longer is not one of its tokens
MAX_LIFETIME = 3600  # seconds from iat to exp: a leaked token must not work for years
_CHAT_ID = re.compile(r"[\x21-\x7e]{1,64}")  # visible ASCII, as stored (usage_records.chat_id)
NO_PERSON = (
    "This service key acts only for a person, and the request names nobody: set "
    "ENABLE_FORWARD_USER_INFO_HEADERS=true in Open WebUI."
)


@dataclass(frozen=True, slots=True)
class ForwardedUser:
    """The header names Open WebUI forwards a person in (its defaults), and the secret its JWT is
    signed with (None: the plain headers are used)."""

    jwt: str = "X-OpenWebUI-User-Jwt"
    email: str = "X-OpenWebUI-User-Email"
    user_id: str = "X-OpenWebUI-User-Id"
    name: str = "X-OpenWebUI-User-Name"
    role: str = "X-OpenWebUI-User-Role"
    chat_id: str = "X-OpenWebUI-Chat-Id"
    secret: bytes | None = field(default=None, repr=False)

    @property
    def names(self) -> frozenset[str]:
        """Every header name in use, lower-cased: what no upstream is sent."""
        headers = (self.jwt, self.email, self.user_id, self.name, self.role, self.chat_id)
        return frozenset(name.lower() for name in headers)


def forwarded_user_from_settings(s: Settings) -> ForwardedUser:
    """The `FORWARD_USER_INFO_HEADER_*` settings as plain values."""
    secret = s.forward_user_info_header_jwt_secret
    return ForwardedUser(
        jwt=s.forward_user_info_header_jwt,
        email=s.forward_user_info_header_user_email,
        user_id=s.forward_user_info_header_user_id,
        name=s.forward_user_info_header_user_name,
        role=s.forward_user_info_header_user_role,
        chat_id=s.forward_session_info_header_chat_id,
        secret=secret.get_secret_value().encode() if secret is not None else None,
    )


@dataclass(frozen=True, slots=True)
class Acting:
    """Who a call is for: the caller as it came, or a service key's call as the person it names;
    and the chat it belongs to (service keys only)."""

    caller: Caller
    chat_id: str | None = None


def is_service_key(caller: Caller) -> TypeGuard[KeyPrincipal]:
    """Whether `caller` holds a key that acts for people."""
    return isinstance(caller, KeyPrincipal) and caller.key.acts_for_users


async def act_for(
    caller: Caller,
    upstream: str,
    headers: Mapping[str, str],
    forwarded: ForwardedUser,
    registry: SessionRegistry,
) -> Acting:
    """The caller a call to `upstream` goes on as: unchanged for everyone but a service key, the
    named person for a service key; PermissionDeniedError (403) when a service key's call may not
    go on. `headers` is case-insensitive (Starlette's). Memory only, unless the view is stale: then
    the database answers (StoreUnavailableError when it cannot)."""
    if not isinstance(caller, KeyPrincipal) or not caller.key.acts_for_users:
        return Acting(caller)
    if upstream not in MODEL_SERVERS:
        raise PermissionDeniedError("A service key acts on the model servers only.", code="service_key_scope")
    if caller.user.role != Role.ADMIN:  # checked at every use, as every key's owner is
        raise PermissionDeniedError(
            "This service key's owner is no longer an administrator: it acts for nobody.",
            code="service_key_owner",
        )
    email = named_email(headers, forwarded)
    if registry.is_stale:
        person = await anyio.to_thread.run_sync(registry.user_by_email_in_database, email)
    else:
        person = registry.view.user_by_email(email)
    return Acting(replace(caller, user=_checked(person, email)), _chat_id(headers.get(forwarded.chat_id)))


def named_email(headers: Mapping[str, str], forwarded: ForwardedUser) -> str:
    """The normalised address of the person a service key's request names (403 when it names
    nobody, or not in the accepted form)."""
    token = headers.get(forwarded.jwt)
    if forwarded.secret is not None:
        if token is None:
            if headers.get(forwarded.email) is not None:
                raise _refused(
                    f"FORWARD_USER_INFO_HEADER_JWT_SECRET is set, so only the signed {forwarded.jwt} names "
                    "a person: set the same secret in Open WebUI."
                )
            raise _refused(NO_PERSON)
        email = _verified_email(token, forwarded.secret, forwarded.jwt)
    elif token is not None:
        raise _refused(
            f"{forwarded.jwt} came, but FORWARD_USER_INFO_HEADER_JWT_SECRET is not set here to verify it: "
            "set the same secret on both sides."
        )
    else:
        email = headers.get(forwarded.email) or ""
        if not email:
            raise _refused(NO_PERSON)
    # Matched exactly, as single sign-on matches addresses: folding (a Kelvin sign, full-width
    # letters) would let a look-alike account in Open WebUI be charged to, and act as, another person.
    address = exact_address(email)
    if address is None:
        raise _refused("The person named by Open WebUI has no plain ASCII email address.")
    return address


def _verified_email(token: str, secret: bytes, name: str) -> str:
    """The `email` of Open WebUI's signed token (in header `name`), or 403 saying what is wrong with it."""
    if len(token) > MAX_TOKEN:
        raise _refused(f"{name} is not a token Open WebUI makes (too long).")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=ISSUER,
            leeway=LEEWAY,
            options={"require": ["exp", "iat", "iss", "email"]},
        )
        if claims["exp"] - claims["iat"] > MAX_LIFETIME:
            raise _refused(f"{name} lives longer than {MAX_LIFETIME} seconds; Open WebUI's live 300.")
    except jwt.ExpiredSignatureError:
        raise _refused(f"{name} has expired (check both servers' clocks).") from None
    except jwt.InvalidSignatureError:
        raise _refused(
            f"{name} is not signed with FORWARD_USER_INFO_HEADER_JWT_SECRET: "
            "set the same secret on both sides."
        ) from None
    except jwt.InvalidAlgorithmError:
        raise _refused(f"{name} must be signed with HS256.") from None
    except jwt.InvalidIssuerError:
        raise _refused(f"{name} was not issued by Open WebUI (iss must be '{ISSUER}').") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _refused(f"{name} lacks the '{exc.claim}' claim.") from None
    except jwt.InvalidTokenError:
        raise _refused(f"{name} cannot be read as a token.") from None
    email = claims.get("email")
    if not isinstance(email, str):
        raise _refused(f"{name} names no email address.")
    return email


def _checked(person: UserState | None, email: str) -> UserState:
    """The person, if they may use wardgate now; 403 otherwise (never charged to the key instead)."""
    if person is None:
        raise _refused(f"{email} has no account at wardgate: the person must sign in here first.")
    if not person.active:
        raise _refused(f"The account of {email} is disabled.")
    if person.role == Role.PENDING:
        raise _refused(PENDING_APPROVAL)
    return person


def _chat_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not _CHAT_ID.fullmatch(value):
        raise BadRequestError("The chat id must be 1 to 64 visible ASCII characters.", code="invalid_chat_id")
    return value


def _refused(detail: str) -> PermissionDeniedError:
    return PermissionDeniedError(detail, code="service_key_person")
