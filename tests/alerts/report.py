"""build/alerts-report.md: per alert, the fault that fired it, the time to firing and to
resolved, and the receiver of the example Alertmanager its notification reached (or that an
inhibit rule suppressed it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tests.alerts.conftest import ROOT
from tests.alerts.watch import Record

REPORT = ROOT / "build" / "alerts-report.md"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _receiver(record: Record) -> str:
    if record.inhibited:
        late = set(record.receivers) - set(record.receivers_during)
        return "inhibited" + (f"; {', '.join(sorted(late))} after the fault" if late else "")
    return ", ".join(record.receivers) or "none"


def write_report(records: Iterable[Record], path: Path = REPORT) -> None:
    lines = [
        "# Alerts fired by real faults",
        "",
        "Written by tests/alerts/test_alerts_fire.py (`for` and range windows 1/30 of the",
        "shipped ones, Prometheus scraping and evaluating every second). Time to firing is from",
        "the fault's start; time to resolved from the fault's removal. Receiver: where the",
        "example Alertmanager (timers 1/30) delivered its firing notification.",
        "",
        "| alert | instance | fault | to firing (s) | to resolved (s) | receiver |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| {r.alert} | {r.instance} | {r.fault} | {_seconds(r.to_fire_s)} |"
        f" {_seconds(r.to_resolve_s)} | {_receiver(r)} |"
        for r in sorted(records, key=lambda r: (r.alert, r.instance))
    )
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
