"""House rules that keep the architecture honest."""

from __future__ import annotations

import subprocess
import sys

import wardgate

CORE = [
    "config",
    "errors",
    "tokens",
    "passwords",
    "sessions",
    "accounts",
    "account_types",
    "audit",
    "ratelimit",
    "channel",
    "proxy.upstreams",
    "oauth.service",
    "oauth.linking",
    "apikeys",
    "apikey_service",
    "models",
    "db",
    "review",
    "security_headers",
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
