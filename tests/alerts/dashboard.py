"""The shipped Grafana dashboard's queries, with Grafana's variables replaced so that
promtool and a plain Prometheus can run them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.alerts.conftest import DASHBOARD

#: Grafana variables → what they stand for when every Router is selected.
SUBSTITUTIONS = {"$instance": ".+", "$__rate_interval": "1m"}


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str  # as run by Prometheus: variables substituted

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def document() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in document()["panels"] if panel["type"] != "row"]


def substitute(expr: str, rate_interval: str = SUBSTITUTIONS["$__rate_interval"]) -> str:
    for variable, value in {**SUBSTITUTIONS, "$__rate_interval": rate_interval}.items():
        expr = expr.replace(variable, value)
    return expr


def queries(rate_interval: str = SUBSTITUTIONS["$__rate_interval"]) -> list[Query]:
    """Every panel's queries; ``rate_interval`` stands for Grafana's ``$__rate_interval``."""
    return [
        Query(panel["title"], target["refId"], substitute(target["expr"], rate_interval))
        for panel in panels()
        for target in panel["targets"]
    ]


def query(name: str, rate_interval: str = SUBSTITUTIONS["$__rate_interval"]) -> str:
    """The expression of the query ``"<panel title> [<refId>]"``."""
    (found,) = [q.expr for q in queries(rate_interval) if q.name == name]
    return found
