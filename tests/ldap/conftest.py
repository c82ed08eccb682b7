"""The directory tests share one slapd for the session (it starts in well under a second)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ldap.server import Directory, running_slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    with running_slapd(tmp_path_factory.mktemp("slapd")) as directory:
        yield directory
