"""Reading an ASGI scope's headers without building Starlette objects, for the per-request hot path.

Starlette's `Headers(scope=scope).get(name)` builds an object and goes through `Mapping.get` for
each lookup; the middleware every request passes needs one or two values each, so they scan the raw
list here instead. Names are compared in lower case: servers lower-case them (ASGI spec), and
`TrustedProxyMiddleware`, the outermost layer, lower-cases whatever else arrives.
"""

from __future__ import annotations

from starlette.types import Scope


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the header `name` (lower-case bytes), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def text_header(scope: Scope, name: bytes) -> str | None:
    """The first value of the header `name`, decoded as Latin-1 (as Starlette decodes), or None."""
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


_LENGTH_DIGITS = 20  # 2**64 - 1 has 20; the parser refuses longer lengths, whatever their leading zeros


def declared_length(value: str | bytes | None) -> int | None:
    """A Content-Length value as a number, or None when absent or not a plain number.

    Leading zeros are dropped before reading it: the parser accepts any number of them, and Python
    refuses to read a number of more than 4,300 digits (a request of `Content-Length: 000…05` would
    have raised ValueError, a 500 for anyone, with a traceback in the log)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0")
    return int(digits or "0") if len(digits) <= _LENGTH_DIGITS else None
