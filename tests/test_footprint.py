"""What a default start loads: the optional parts stay unimported until configured or used.

Measured (README, Performance): each of these costs megabytes of memory and tens of milliseconds of
start-up; a site that uses none of them must not pay for them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OPTIONAL = (
    *("alembic", "redis", "ldap3", "webauthn", "authlib", "httpx2", "joserfc", "websockets", "psycopg"),
    *("jinja2", "pyotp", "segno"),
)
_SCRIPT = """
import asyncio, json, sys
from wardgate import cli
from wardgate.config import load_settings
from wardgate.gateway import Gateway
settings = load_settings({env!r})
async def start():
    gateway = Gateway.build(settings)
    await gateway.start()
    await gateway.stop()
asyncio.run(start())
cli.create_app(settings)
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def _loaded(env: dict[str, str]) -> set[str]:
    command = [sys.executable, "-c", _SCRIPT.format(env=env)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_default_start_loads_no_optional_part(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path)}
    _loaded(env)  # the first start migrates (Alembic): the question is about every start after it
    assert _loaded(env) & set(OPTIONAL) == set()


def test_configured_parts_are_loaded(tmp_path: Path) -> None:
    env = {
        "DATA_DIR": str(tmp_path),
        "ENABLE_LDAP": "true",
        "LDAP_SEARCH_BASE": "dc=example,dc=org",
        "OAUTH_CLIENT_ID": "wardgate",
        "OAUTH_CLIENT_SECRET": "s" * 32,
        "OPENID_PROVIDER_URL": "https://id.example.com/.well-known/openid-configuration",
        "WEBUI_URL": "https://chat.example.com",
    }
    assert {"ldap3", "authlib", "alembic"} <= _loaded(env)  # a new database: migrated
