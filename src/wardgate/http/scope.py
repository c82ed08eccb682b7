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
