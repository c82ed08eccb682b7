"""Which model a call uses, and whether the caller may use it (pure: no I/O).

`classify` names what a request to a model server does: uses a model named in its body, lists
models, names one in its path, or manages the server — pull, delete, files, fine-tuning, batches,
and, denied by default, anything else it does not know — or none of these (Ollama's
`/api/version`). `ModelRules.may_use` applies the rules in the order of how specific they are —
the role's patterns, the person's groups, the person's own `allowed_models`, the API
key's `models` — each of which can only narrow what the one before allowed:

- no rule at a level allows everything at that level (the default: every model for everyone);
- the groups' rules are one level: a member may use what any of their groups with a rule allows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from wardgate.config.model_access import ModelAccess, matches
from wardgate.errors import PermissionDeniedError
from wardgate.identity.authentication import Caller, KeyPrincipal
from wardgate.sessions.records import ApiKeyState, UserState
from wardgate.usage.budgets import Allowance, allowances
from wardgate.usage.wire import Format

MANAGE_REQUIRED = "Managing the model server is for administrators."
MANAGE_NARROWED = (
    "Managing the model server (creating, copying, pulling, deleting models, batches) is beyond any "
    "list of models or budget: it is refused to a key or person one applies to."
)


class Kind(enum.Enum):
    USE = "use"  # the model is named in the request body
    LIST = "list"  # the answer lists models: filtered to what the caller may use
    NAMED = "named"  # the model is named in the path (GET /models/{id})
    MANAGE = "manage"  # changes what the server holds or runs jobs on it


@dataclass(frozen=True, slots=True)
class ModelCall:
    """What a request to a model server is: its kind, its wire format and its endpoint's name."""

    kind: Kind
    format: Format
    endpoint: str  # e.g. "chat/completions", "api/chat"
    multipart: bool = False
    named: str | None = None  # the model a NAMED call names


_OPENAI_USE = {
    "chat/completions": False,
    "completions": False,
    "embeddings": False,
    "moderations": False,
    "audio/speech": False,
    "audio/transcriptions": True,
    "audio/translations": True,
    "images/generations": False,
    "images/edits": True,
    "images/variations": True,
}
_OLLAMA_USE = ("api/chat", "api/generate", "api/embed", "api/embeddings", "api/show")
_OLLAMA_LIST = ("api/tags", "api/ps")
_OLLAMA_OPEN = ("", "api/version")  # "Ollama is running" and its version: nothing model-specific


def classify(upstream: str, method: str, path: str) -> ModelCall | None:
    """What a request for `path` (below the upstream's mount) does; None: nothing model-specific
    (the app upstream, Ollama's version and root). Deny by default: on a model server, any other
    request this table does not know — an API added after this release (assistants, realtime
    sessions that mint keys of their own, rerank), a stored completion, a path in another case —
    is treated as managing the server (`[management] roles`, admins by default)."""
    if upstream not in ("ollama", "openai"):
        return None
    original = path.strip("/")
    rest = original.lower()  # a server that ignores case must not see a path the rules did not
    if upstream == "ollama":
        if rest in _OLLAMA_USE and method == "POST":
            return ModelCall(Kind.USE, Format.OLLAMA, rest)
        if rest in _OLLAMA_LIST:
            return ModelCall(Kind.LIST, Format.OLLAMA, rest)
        if rest in _OLLAMA_OPEN and method in ("GET", "HEAD"):
            return None
        if not rest.startswith("v1/"):
            return ModelCall(Kind.MANAGE, Format.OLLAMA, rest.split("/", 2)[-1][:64])
    if rest.startswith("v1/"):
        rest, original = rest[3:], original[3:]
    return _openai_call(method, rest, original)


def _openai_call(method: str, rest: str, original: str) -> ModelCall:
    """`rest` is the path below the mount (and `v1/`) in lower case, `original` as it came: a model
    named in the path is the one the upstream will look up, in its own case (vLLM's ids are
    case-sensitive: `Qwen/x` is not `qwen/x`, which a rule `qwen*` allows; found by review)."""
    if rest in _OPENAI_USE and method == "POST":
        return ModelCall(Kind.USE, Format.OPENAI, rest, multipart=_OPENAI_USE[rest])
    if rest == "responses" and method == "POST":
        return ModelCall(Kind.USE, Format.RESPONSES, rest)
    if rest == "models":
        return ModelCall(Kind.LIST, Format.OPENAI, rest)
    if rest.startswith("models/") and len(rest) > len("models/") and method in ("GET", "HEAD"):
        return ModelCall(Kind.NAMED, Format.OPENAI, "models", named=original[len("models/") :])
    return ModelCall(Kind.MANAGE, Format.OPENAI, rest.split("/", 1)[0][:64])


@dataclass(frozen=True, slots=True)
class ModelRules:
    """The configured rules (`MODEL_ACCESS_FILE`) applied to a caller, and the size a model
    request may have (`MODEL_REQUEST_MAX_BYTES`)."""

    access: ModelAccess
    max_request_bytes: int = 4 * 1024 * 1024

    def may_use(self, caller: Caller, model: str) -> bool:
        """Whether every level of rule that applies to `caller` allows `model`."""
        user = caller.user
        role_rule = self.access.role_models.get(user.role)
        if role_rule is not None and not matches(role_rule, model):
            return False
        group_rules = [self.access.group_models[g] for g in user.groups if g in self.access.group_models]
        if group_rules and not any(matches(rule, model) for rule in group_rules):
            return False
        if user.allowed_models is not None and not matches(user.allowed_models, model):
            return False
        key = caller.key if isinstance(caller, KeyPrincipal) else None
        return key is None or key.models is None or matches(key.models, model)

    def require(self, caller: Caller, model: str | None) -> str:
        """The model, if the caller may use it; PermissionDeniedError (403) naming it otherwise."""
        if not model or not self.may_use(caller, model):
            shown = (model or "")[:200]
            raise PermissionDeniedError(f"You may not use the model {shown}.", code="model_denied")
        return model

    def allowances(self, user: UserState, key: ApiKeyState | None = None) -> list[Allowance]:
        """The budgets a call by `user` (with `key`) is charged to (`wardgate.usage.budgets`)."""
        return allowances(
            self.access,
            user_id=user.id,
            role=user.role,
            groups=user.groups,
            own=user.token_budget,
            key_id=key.id if key else None,
            key_budget=key.token_budget if key else None,
        )

    def require_manager(self, caller: Caller) -> None:
        """Managing the model server: the configured roles only (default: admins), and never a
        caller any list of models or budget applies to (its own, its key's, its role's or one of its
        groups'). Management escapes them all: a model the rules refuse can be copied to a name they
        allow, and batches or pulls are not metered (a key made for `llama3*` with 100 tokens copied
        `mistral` to `llama3-mistral`, found by review)."""
        user = caller.user
        if user.role not in self.access.manage_roles:
            raise PermissionDeniedError(MANAGE_REQUIRED, code="model_management_denied")
        key = caller.key if isinstance(caller, KeyPrincipal) else None
        narrowed = (
            user.role in self.access.role_models
            or any(group in self.access.group_models for group in user.groups)
            or user.allowed_models is not None
            or (key is not None and key.models is not None)
            or bool(self.allowances(user, key))
        )
        if narrowed:
            raise PermissionDeniedError(MANAGE_NARROWED, code="model_management_denied")
