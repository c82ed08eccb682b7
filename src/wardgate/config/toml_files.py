"""The TOML rule files (`MODEL_ACCESS_FILE`, `FORWARD_AUTH_FILE`): read whole, keys checked strictly."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def read_toml(path_text: str) -> dict[str, Any]:
    """The file's document; ValueError naming the file and what is wrong with it."""
    try:
        return tomllib.loads(Path(path_text).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path_text!r} ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path_text!r} is not valid TOML ({exc})") from None


def only_keys(table: Mapping[str, Any], keys: set[str], where: str) -> None:
    """ValueError for the first key of `table` that is not one of `keys` (a misspelled rule)."""
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ValueError(f"unknown key {unknown[0][:40]!r} in {where}; expected {', '.join(sorted(keys))}")
