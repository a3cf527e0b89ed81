"""build/alerts-report.md: per alert, the fault that fired it, the time to firing and to
resolved, and the receiver the example Alertmanager routes it to (by severity)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.alerts.conftest import ROOT
from tests.alerts.rules import alerts
from tests.alerts.watch import Record

REPORT = ROOT / "build" / "alerts-report.md"
RECEIVERS = {"critical": "pager", "warning": "chat"}  # deploy/alertmanager/alertmanager.example.yml


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_report(records: Iterable[Record], path: Path = REPORT) -> None:
    severity = {alert.name: alert.labels["severity"] for alert in alerts()}
    lines = [
        "# Alerts fired by real faults",
        "",
        "Written by tests/alerts/test_alerts_fire.py (`for` 2 s, range windows 1/30 of the",
        "shipped ones, Prometheus scraping and evaluating every second). Time to firing is from",
        "the fault's start; time to resolved from the fault's removal.",
        "",
        "| alert | instance | fault | to firing (s) | to resolved (s) | receiver |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {r.alert} | {r.instance} | {r.fault} | {_seconds(r.to_fire_s)} |"
        f" {_seconds(r.to_resolve_s)} | {RECEIVERS[severity[r.alert]]} |"
        for r in sorted(records, key=lambda r: (r.alert, r.instance))
    )
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
