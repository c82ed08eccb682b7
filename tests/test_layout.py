"""House rules that keep the architecture honest."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

import wardgate
from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.http.application import build_routes

CORE = [
    "config.settings",
    "config.review",
    "config.headers",
    "config.sign_on",
    "errors",
    "security.tokens",
    "security.passwords",
    "security.ratelimit",
    "storage.db",
    "storage.models",
    "audit.log",
    "sessions.registry",
    "sessions.channel",
    "identity.accounts",
    "identity.records",
    "identity.key_material",
    "identity.api_keys",
    "proxy.upstreams",
    "oauth.service",
    "oauth.linking",
    "gateway",
]


def test_public_api_is_sorted_and_importable() -> None:
    assert wardgate.__all__ == sorted(wardgate.__all__)
    for name in wardgate.__all__:
        assert hasattr(wardgate, name)


def test_the_core_never_imports_the_web_framework() -> None:
    code = (
        "import sys\n"
        + "".join(f"import wardgate.{m}\n" for m in CORE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')"
        " or m.startswith('wardgate.http'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_every_dependency_is_a_coroutine(make_settings: Callable[..., Settings]) -> None:
    """FastAPI runs a plain `def` dependency in its thread pool: a hop per request on the hot path."""
    app = build_routes(Gateway.build(make_settings()))
    plain: list[str] = []

    def walk(dependant: Dependant) -> None:
        for dependency in dependant.dependencies:
            call = dependency.call
            ours = call is not None and getattr(call, "__module__", "").startswith("wardgate")
            if ours and not inspect.iscoroutinefunction(call):
                plain.append(f"{call.__module__}.{call.__qualname__}")
            walk(dependency)

    def routes(container: object) -> list[object]:
        found: list[object] = []
        for route in getattr(container, "routes", []):
            inner = getattr(route, "original_router", None)  # FastAPI's lazily included router
            found.extend(routes(inner) if inner is not None else [route])
        return found

    checked = [r for r in routes(app.router) if isinstance(r, APIRoute | APIWebSocketRoute)]
    for route in checked:
        walk(route.dependant)
    assert len(checked) > 40
    assert sorted(set(plain)) == []
