"""Start-up runs with the garbage collector off (`wardgate.__main__`): every command turns it back
on, and a server does once start-up is built, with what start-up built frozen (`settle_heap`). A
process left with it off would never free a reference cycle again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_ENTRY = "import gc, wardgate.__main__ as entry; assert not gc.isenabled(), 'off during start-up';"


def _run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _ENTRY + code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path)}


@pytest.mark.parametrize("command", [["gen-secret"], ["check"]])
def test_a_command_runs_with_the_collector_on(command: list[str], env: dict[str, str]) -> None:
    assert _run(f"entry.main({command!r}); print(gc.isenabled())", env) == "True"


def test_a_server_turns_it_on_with_its_start_up_frozen(env: dict[str, str]) -> None:
    code = (
        "from wardgate.app import create_app; from wardgate.config import load_settings;"
        "from wardgate.http import server;"
        f"app = create_app(load_settings({{'DATA_DIR': {env['DATA_DIR']!r}}}));"
        "server.settle_heap(); print(gc.isenabled(), gc.get_freeze_count() > 50_000)"
    )
    assert _run(code, env) == "True True"
