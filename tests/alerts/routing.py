"""The shipped Alertmanager example, run against a webhook sink, and what reached it.

Each receiver keeps its kind (PagerDuty for ``pager``, Slack for ``chat``) and only its URL
moves to the sink, so the sink sees the very payloads those integrations send; the subject
line of either (``[FIRING:1] <alertname> <instance> (...)``) names the alert and the Router.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.alerts.conftest import ALERTMANAGER_EXAMPLE
from tests.helpers.alertmanager import WebhookSink

TIMERS = ("group_wait", "group_interval", "repeat_interval")
UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def _shorter(duration: str, divisor: int) -> str:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)", duration).groups()  # type: ignore[union-attr]
    return f"{max(100, int(number) * UNITS_MS[unit] // divisor)}ms"


def _shorten_route(route: dict[str, Any], divisor: int) -> None:
    for key in TIMERS:
        if key in route:
            route[key] = _shorter(route[key], divisor)
    for child in route.get("routes", []):
        _shorten_route(child, divisor)


def example_config(sink: WebhookSink, divisor: int) -> dict[str, Any]:
    """The shipped example with each receiver's URL on the sink (/<receiver>) and its route
    timers divided by ``divisor``; routing tree and inhibit rules as shipped."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            pagerduty["url"] = sink.url(f"/{receiver['name']}")
        for slack in receiver.get("slack_configs", []):
            slack["api_url"] = sink.url(f"/{receiver['name']}")
    _shorten_route(config["route"], divisor)
    return config


def pager_events(sink: WebhookSink, before: float | None = None) -> list[tuple[str, str]]:
    """(event_action, summary) of every PagerDuty event the pager receiver sent."""
    events = sink.received("/pager", before)
    return [(e["event_action"], e["payload"]["summary"]) for e in events]


def chat_subjects(sink: WebhookSink, before: float | None = None) -> list[str]:
    """The subject line (``[FIRING:1] <alertname> <instance> ...``) of every chat message."""
    return [m["attachments"][0]["fallback"] for m in sink.received("/chat", before)]


def reached(sink: WebhookSink, alert: str, instance: str, before: float | None = None) -> list[str]:
    """The receivers a firing notification of ``alert`` for ``instance`` reached (before)."""
    subject = f"{alert} {instance} "
    found = []
    if any(a == "trigger" and subject in s for a, s in pager_events(sink, before)):
        found.append("pager")
    if any(s.startswith("[FIRING") and subject in s for s in chat_subjects(sink, before)):
        found.append("chat")
    return found
