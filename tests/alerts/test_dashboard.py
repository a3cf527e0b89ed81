"""The Grafana dashboard: importable as is, every query parses (promtool) and names only what
natsrouter exports, and every exported metric has a panel."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from natsrouter.observability.verify import expected_families
from tests.alerts.contract import contract, kept_names
from tests.alerts.dashboard import document, panels, queries
from tests.alerts.promql import problems, series

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_imports_as_is() -> None:
    dash = document()
    assert (dash["uid"], dash["title"], dash["id"]) == ("natsrouter", "natsrouter", None)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    assert variables["instance"]["definition"] == (
        "label_values(router_nats_connection_status, instance)"
    )
    assert "__inputs" not in dash  # nothing to fill in on import
    ids = [panel["id"] for panel in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_no_two_panels_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in document()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_query_parses(tool: Callable[[str], str], tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    found = queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": query.expr}
                    for i, query in enumerate(found)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(found)} rules found" in result.stdout


def test_queries_name_only_what_the_router_exports() -> None:
    found = {query.name: problems(query.expr, contract()) for query in queries()}
    assert {name: issues for name, issues in found.items() if issues} == {}


def _family(name: str) -> str:
    """The metric a series belongs to: a histogram's three series, a counter's ``_total``."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and f"{base}_bucket" in contract().labels:
            return base
    return name.removesuffix("_total")


def test_every_exported_metric_has_a_panel() -> None:
    """Every exported family is on a panel, a kept contract name through its lint-clean twin."""
    shown = {_family(name) for query in queries() for name in series(query.expr)}
    exported = {_family(name) for name in contract().labels}
    assert exported == set(expected_families())  # the same families verify-metrics checks
    kept = kept_names()
    assert sorted(exported - shown - set(kept)) == []
    assert {clean for _, clean in kept.values()} <= shown
    assert not set(kept) & shown  # panels use the lint-clean name


def test_the_panels_the_issue_asks_for() -> None:
    titles = {panel["title"] for panel in panels()}
    assert titles >= {
        "Connection status",
        "Connection events",
        "Outage durations (last hour)",
        "Operation success ratio",
        "Pending operations",
        "Pending bytes",
        "Pending drops and rejections",
        "Replay",
        "Fail-open",
        "Decide rate by outcome",
        "Decide latency by transport",
        "Consumer throughput",
        "Redeliveries and dead letters",
        "Circuit breakers",
    }
    success = next(p for p in panels() if p["title"] == "Operation success ratio")
    assert [t["legendFormat"] for t in success["targets"]] == ["publish", "publish_with_ack", "ack"]
