"""Forward-auth fixtures: a rules file and an instance that guards two sites for a proxy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

RULES = """
[[sites]]
host = "app.example.test"
public = ["/health", "/static/"]
api_keys = true

[[sites.paths]]
prefix = "/admin"
roles = ["admin"]

[[sites]]
host = "*.apps.example.test"
roles = ["user", "admin"]
groups = ["research"]
"""
WARDGATE = "https://login.example.test"


def write_rules(tmp_path: Path, text: str = RULES) -> str:
    path = tmp_path / "forward-auth.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def guard(make_client: Callable[..., TestClient], tmp_path: Path) -> TestClient:
    """An instance guarding app.example.test and *.apps.example.test."""
    return make_client(
        base_url=WARDGATE,
        FORWARD_AUTH_FILE=write_rules(tmp_path),
        WEBUI_URL=WARDGATE,
        ENABLE_API_KEYS="true",
        DEFAULT_USER_ROLE="user",
    )
