"""House rules that keep the architecture honest: the import graph, the layers, where settings go."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute

import wardgate
from wardgate.config import Settings
from wardgate.gateway import Gateway
from wardgate.http.application import build_routes

SRC = Path(wardgate.__file__).parent

# Each package and what it may import of wardgate, inner layers first. A module may always import
# its own package and `wardgate.errors`; anything not listed here is refused.
LAYERS: dict[str, set[str]] = {
    "config": set(),
    "observability": set(),  # metrics and traces: every layer may report to it
    "security": {"config"},
    "storage": {"config"},
    "audit": {"storage"},
    "sessions": {"config", "security", "storage", "observability"},
    "identity": {"config", "security", "storage", "audit", "sessions"},
    "oauth": {"config", "security", "storage", "audit", "sessions", "identity"},
    "mfa": {"config", "security", "storage", "audit", "sessions", "identity"},
    "ldap": {"config", "security", "storage", "audit", "sessions", "identity"},
    "usage": {"config", "storage", "observability"},
    "proxy": {"config", "sessions", "identity", "usage"},
    "gateway": {
        "config",
        "security",
        "storage",
        "audit",
        "sessions",
        "identity",
        "oauth",
        "mfa",
        "ldap",
        "proxy",
        "usage",
    },
    "http": {
        "__init__",
        "config",
        "security",
        "storage",
        "audit",
        "sessions",
        "identity",
        "oauth",
        "mfa",
        "ldap",
        "proxy",
        "usage",
        "gateway",
        "observability",
    },
    "app": {"config", "gateway", "http"},
    "cli": {"config", "storage", "sessions", "identity", "gateway", "http", "app", "observability"},
    "errors": set(),
    "__init__": {"config"},
    "__main__": {"cli"},
}
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        if "migrations" in path.parts:
            continue  # Alembic's scripts, run by Alembic with the models
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(("wardgate", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every module `name` imports (at any depth in the file), resolved to modules of wardgate or not."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base  # `from package import module`


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {m for m in _imports(name, path, known) if m in known} for name, path in modules.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    # Tarjan's strongly connected components: a cycle is a component of more than one module (or a
    # module importing itself).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert len(graph) > 60
    assert cycles == []


def test_each_layer_imports_only_the_layers_beneath_it() -> None:
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        allowed = LAYERS[layer] | {layer, "errors"}
        wrong += [f"{module} -> {t}" for t in sorted(targets) if _layer(t) not in allowed]
    assert wrong == []


def test_config_is_a_leaf() -> None:
    """config imports nothing of wardgate but its errors (and its own modules)."""
    outside = [
        f"{m} -> {t}"
        for m, targets in _graph().items()
        if _layer(m) == "config"
        for t in targets
        if _layer(t) not in ("config", "errors")
    ]
    assert outside == []
    # One process: what importing wardgate.config loads (the ORM, a web framework or Redis would be
    # seconds of start-up for `wardgate check`).
    code = "import sys, wardgate.config\nprint(' '.join(sys.modules))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    ours = {m for m in loaded if m.startswith("wardgate")}
    assert {m.split(".")[1] for m in ours if "." in m} <= {"config", "errors"}, sorted(ours)
    heavy = {"sqlalchemy", "fastapi", "starlette", "redis", "alembic", "httpx"} & {
        m.split(".")[0] for m in loaded
    }
    assert heavy == set(), f"importing wardgate.config loads {sorted(heavy)}"


def test_only_http_imports_the_web_framework() -> None:
    """The core never imports FastAPI, Starlette or uvicorn (the command line starts uvicorn)."""
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if _layer(name) in ("http", "cli"):
            continue
        for imported in _imports(name, path, set(modules)):
            if imported.split(".")[0] in WEB_FRAMEWORKS:
                wrong.append(f"{name} -> {imported}")
    assert wrong == []


def test_only_the_composition_root_and_the_application_read_settings() -> None:
    """Components receive plain values: in http, only the assembly (`application`, `site`, `server`)
    sees `Settings`."""
    wrong = []
    for name, path in _modules().items():
        if _layer(name) != "http" or name.endswith((".application", ".site", ".server")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "settings":
                wrong.append(f"{name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and any(a.name == "Settings" for a in node.names):
                wrong.append(f"{name}:{node.lineno} imports Settings")
    assert wrong == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for package in sorted(
        {_layer(m) for m in _modules()} - {"__init__", "__main__", "app", "cli", "errors", "gateway"}
    ):
        doc = ast.get_docstring(ast.parse((SRC / package / "__init__.py").read_text()))
        assert doc and "import" in doc, (
            f"wardgate/{package}/__init__.py needs a docstring with its imports rule"
        )


def test_public_api_is_sorted_and_importable() -> None:
    assert wardgate.__all__ == sorted(wardgate.__all__)
    for name in wardgate.__all__:
        assert hasattr(wardgate, name)


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
