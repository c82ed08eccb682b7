"""Who may use which model, and how much: the parts of the rules that live in configuration.

`MODEL_ACCESS_FILE` names a TOML file, read once at start and refused whole (naming the variable
and the problem) when anything in it is not understood, since a rule that is misspelled must never
quietly become "no rule":

```toml
[models.roles]            # glob patterns per role; a role without an entry may use every model
user = ["llama3*", "gpt-4o-mini"]

[models.groups]           # a group's patterns narrow its members' (never widen them)
interns = ["llama3*"]

[budgets.roles]           # per person, for everyone of the role without a budget of their own
user = { tokens = 200000, period = "1d" }

[budgets.groups]          # one pool the whole group shares
research = { tokens = 5000000, period = "30d", requests = 20000 }

[management]              # who may pull, push, create, copy and delete models, and use files,
roles = ["admin"]         # fine-tuning and batches (default: admins)
```

Periods are calendar windows in UTC (`Budget.window`): `1h` the clock hour, `1d` the day, `7d` the
week from Monday, `30d` the calendar month.
"""

from __future__ import annotations

import calendar
import fnmatch
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wardgate.config.toml_files import only_keys, read_toml
from wardgate.config.values import ROLE_NAMES, Role

PERIODS = ("1h", "1d", "7d", "30d")
MAX_PATTERNS = 256  # per rule
MAX_TOKENS = 10**15
_PATTERN = re.compile(r"[A-Za-z0-9*?\[\]._:/@+!-]{1,200}")
_MONDAY_OFFSET = 4 * 86400  # 1970-01-01 was a Thursday
MODEL_PATTERNS_FORM = 'a list of model names or glob patterns such as ["llama3*", "gpt-4o-mini"]'
BUDGET_FORM = '{"tokens": N, "period": "1h" | "1d" | "7d" | "30d"} with an optional "requests": N'


@dataclass(frozen=True, slots=True)
class Budget:
    """A token (and optionally request) allowance per calendar period."""

    tokens: int
    period: str
    requests: int | None = None

    def window(self, now: float | None = None) -> tuple[int, int]:
        """The current period as [start, end) Unix times, UTC."""
        at = int(time.time() if now is None else now)
        if self.period == "1h":
            start = at - at % 3600
            return start, start + 3600
        if self.period == "1d":
            start = at - at % 86400
            return start, start + 86400
        if self.period == "7d":
            start = at - (at - _MONDAY_OFFSET) % (7 * 86400)
            return start, start + 7 * 86400
        day = time.gmtime(at)
        start = calendar.timegm((day.tm_year, day.tm_mon, 1, 0, 0, 0))
        year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
        return start, calendar.timegm((year, month, 1, 0, 0, 0))

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"tokens": self.tokens, "period": self.period}
        if self.requests is not None:
            found["requests"] = self.requests
        return found


def parse_budget(value: object) -> Budget:
    """A budget from its JSON/TOML form; ValueError naming the problem and `BUDGET_FORM`."""
    if not isinstance(value, Mapping):
        raise ValueError(f"a budget must be {BUDGET_FORM}")
    unknown = sorted(set(value) - {"tokens", "period", "requests"})
    if unknown:
        raise ValueError(f"unknown budget field {str(unknown[0])[:40]!r}; a budget is {BUDGET_FORM}")
    tokens, period, requests = value.get("tokens"), value.get("period"), value.get("requests")
    if type(tokens) is not int or not 0 <= tokens <= MAX_TOKENS:
        raise ValueError(f"a budget's tokens must be a whole number from 0 to {MAX_TOKENS}")
    if period not in PERIODS:
        raise ValueError(f"a budget's period must be one of {', '.join(PERIODS)}")
    if requests is not None and (type(requests) is not int or not 0 <= requests <= MAX_TOKENS):
        raise ValueError("a budget's requests must be a whole number")
    return Budget(tokens, str(period), requests)


def parse_patterns(value: object) -> tuple[str, ...]:
    """Model patterns from a list; ValueError naming the problem and `MODEL_PATTERNS_FORM`."""
    if not isinstance(value, list) or len(value) > MAX_PATTERNS:
        raise ValueError(f"model rules must be {MODEL_PATTERNS_FORM} (at most {MAX_PATTERNS})")
    for item in value:
        if not isinstance(item, str) or not _PATTERN.fullmatch(item):
            raise ValueError(
                f"{str(item)[:40]!r} is not a model name or pattern; expected {MODEL_PATTERNS_FORM}"
            )
    return tuple(dict.fromkeys(value))


def matches(patterns: Iterable[str], model: str) -> bool:
    """Whether `model` matches one of the glob patterns. Ollama's implicit tag counts: `llama3` is
    `llama3:latest`, whichever of the two the pattern or the request names."""
    names = {model}
    if model.endswith(":latest"):
        names.add(model.removesuffix(":latest"))
    elif ":" not in model:
        names.add(model + ":latest")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


@dataclass(frozen=True, slots=True)
class ModelAccess:
    """The configured rules (`MODEL_ACCESS_FILE`); the default allows every model to everyone."""

    role_models: Mapping[Role, tuple[str, ...]] = field(default_factory=dict)
    group_models: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    role_budgets: Mapping[Role, Budget] = field(default_factory=dict)
    group_budgets: Mapping[str, Budget] = field(default_factory=dict)
    manage_roles: frozenset[Role] = frozenset({Role.ADMIN})


def load_model_access(path_text: str) -> ModelAccess:
    """Read and check the file; ValueError naming what is wrong (the variable is named by the caller)."""
    document = read_toml(path_text)
    only_keys(document, {"models", "budgets", "management"}, "the file")
    models = _table(document, "models", {"roles", "groups"})
    budgets = _table(document, "budgets", {"roles", "groups"})
    management = _table(document, "management", {"roles"})
    manage = management.get("roles", ["admin"])
    if not isinstance(manage, list) or any(r not in ROLE_NAMES for r in manage):
        raise ValueError(f"management.roles must be a list of {', '.join(ROLE_NAMES)}")
    try:
        return ModelAccess(
            role_models={_role(r): parse_patterns(v) for r, v in _table(models, "roles").items()},
            group_models={_group(g): parse_patterns(v) for g, v in _table(models, "groups").items()},
            role_budgets={_role(r): parse_budget(v) for r, v in _table(budgets, "roles").items()},
            group_budgets={_group(g): parse_budget(v) for g, v in _table(budgets, "groups").items()},
            manage_roles=frozenset(Role(r) for r in manage),
        )
    except ValueError as exc:
        raise ValueError(f"{path_text!r}: {exc}") from None


def _table(parent: Mapping[str, Any], name: str, keys: set[str] | None = None) -> dict[str, Any]:
    value = parent.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"[{name}] must be a table")
    if keys is not None:
        only_keys(value, keys, f"[{name}]")
    return value


def _role(name: str) -> Role:
    if name not in ROLE_NAMES:
        raise ValueError(f"unknown role {name[:20]!r}; expected {', '.join(ROLE_NAMES)}")
    return Role(name)


def _group(name: str) -> str:
    if not name or len(name) > 255:
        raise ValueError("a group name must be 1 to 255 characters")
    return name
