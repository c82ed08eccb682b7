"""The example configurations in docs/examples are valid and pass `check --production`."""

from __future__ import annotations

from pathlib import Path

import pytest
from dotenv import dotenv_values

from wardgate.config import load_settings, variable_names
from wardgate.config.headers import HEADER_ENV_NAMES
from wardgate.config.review import production_findings

EXAMPLES = sorted((Path(__file__).parents[1] / "docs" / "examples").glob("*.env"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_passes_the_production_review(example: Path, tmp_path: Path) -> None:
    values = {k: v for k, v in dotenv_values(example).items() if v is not None}
    settings = load_settings({**values, "DATA_DIR": str(tmp_path)})
    assert production_findings(settings) == []


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    names = [*variable_names(), *HEADER_ENV_NAMES]
    missing = [name for name in names if f"`{name}`" not in readme]
    assert missing == []


def test_the_three_seed_examples_exist() -> None:
    assert {p.stem for p in EXAMPLES} >= {"basic-production", "high-security-redis", "behind-proxy"}
