"""The parse rules of `Settings` fields, as pydantic field types: `Bool`, `Rate`, `Roles`, `WebUrl`...

Each text variable is trimmed, an empty value means the default, every value is one line of
printable text of bounded length, and then its own parser (`values`, `network`) makes the typed
value or refuses with the accepted form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, InstanceOf, SecretStr
from pydantic_core import PydanticUseDefault

from wardgate.config import network, values
from wardgate.config.values import Rate, Role, parse_rate, printable

SameSite = Literal["lax", "strict", "none"]


def _parse_bool(value: object) -> object:
    """Open WebUI's rule (`true`, any case) but refuse anything that is neither true nor false."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "":
        raise PydanticUseDefault()
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("expected true or false")


def parsed(parse: Callable[[str], Any], *, limit: int = 4096) -> BeforeValidator:
    """A rule for text variables: trimmed, empty means the default, otherwise `parse`d.

    Every value is one line of printable text of bounded length before its own rule applies.
    """

    def run(value: object) -> object:
        if not isinstance(value, str):
            return value  # a typed value (a default, or `model_copy`)
        text = value.strip()
        if text == "":
            raise PydanticUseDefault()
        return parse(printable(text, limit=limit))

    return BeforeValidator(run)


def same(text: str) -> str:
    return text


Bool = Annotated[bool, BeforeValidator(_parse_bool)]
OptionalBool = Annotated[bool | None, BeforeValidator(_parse_bool)]
Text = Annotated[str, parsed(same, limit=1024)]
Name = Annotated[str, parsed(same, limit=255)]
Secret = Annotated[SecretStr, BeforeValidator(lambda v: _secret(v))]
HeaderSecret = Annotated[SecretStr, parsed(same, limit=4096)]  # sent in a header: one line, trimmed
Lower = Annotated[str, parsed(str.lower, limit=64)]
Lifetime = Annotated[timedelta | None, parsed(values.parse_duration)]
RateValue = Annotated[InstanceOf[Rate], parsed(parse_rate)]
Roles = Annotated[frozenset[Role], parsed(values.roles)]
Groups = Annotated[frozenset[str], parsed(lambda v: frozenset(values.split_list(v)))]
Scopes = Annotated[tuple[str, ...], parsed(lambda v: values.unique(values.split_list(v, None)))]
ClaimPath = Annotated[str, parsed(lambda v: matching(values.CLAIM_PATH, v, "a claim name such as groups"))]
HeaderName = Annotated[
    str, parsed(lambda v: matching(values.HEADER_NAME, v, "an HTTP header name such as X-Forwarded-Email"))
]
WebUrl = Annotated[str, parsed(network.web_url)]
ProviderUrl = Annotated[str, parsed(network.provider_url)]
UpstreamUrl = Annotated[str, parsed(network.upstream_url)]
Separator = Annotated[str, BeforeValidator(lambda v: _separator(v))]
FilePath = Annotated[Path, parsed(Path)]
LdapAttribute = Annotated[
    str, parsed(lambda v: matching(values.LDAP_ATTRIBUTE, v, "an LDAP attribute name such as uid or mail"))
]
Directory = Annotated[Path, BeforeValidator(lambda v: _directory(v))]


def _secret(value: object) -> object:
    """A secret exactly as given, byte for byte: a key read from a file may end in a newline, and
    trimming it would change every key derived from it. Empty means unset; all blank is refused."""
    if not isinstance(value, str):
        return value
    if value == "":
        raise PydanticUseDefault()
    if not value.strip():
        raise ValueError("must not be blank; unset it instead")
    if len(value) > 4096:
        raise ValueError("longer than 4096 characters")
    return value


def _directory(value: object) -> object:
    """A directory; empty is refused rather than read as a default, since it once meant the working
    directory (a different database, and a fresh first admin, if it quietly moved)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        raise ValueError("must not be empty; use . for the working directory, or unset it for ./data")
    return Path(printable(value.strip(), limit=4096))


def _separator(value: object) -> object:
    """A list separator as given (a space is a separator too); empty means the default."""
    if not isinstance(value, str):
        return value
    if value == "":
        raise PydanticUseDefault()
    return printable(value, limit=8)


def matching(pattern: re.Pattern[str], value: str, form: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"expected {form}")
    return value
