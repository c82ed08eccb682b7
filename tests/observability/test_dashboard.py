"""docs/grafana-dashboard.json: valid, on a Prometheus data source chosen by a variable, and asking
only for what GET /metrics exposes — every family of it, each on some panel."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.observability.conftest import scrape

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}


def _panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from _panels(panel)


def _exposed(text: str) -> dict[str, str]:
    """Each series name a query may use, and the family it belongs to."""
    names = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES[family.type]:
            names[family.name + suffix] = family.name
    return names


def test_the_dashboard_asks_only_for_exposed_metrics(make_gateway: Callable[..., TestClient]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    exposed = _exposed(scrape(make_gateway()))
    used: set[str] = set()
    queries = 0
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bwardgate_[a-z_]+", target["expr"]))
            assert names, target["expr"]
            assert names <= set(exposed), (panel["title"], names - set(exposed))
            used |= {exposed[name] for name in names}
            queries += 1
    assert queries >= 10
    assert used == set(exposed.values())  # a panel for every family
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids))
