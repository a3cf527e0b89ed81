"""The shipped alert rules and their promtool unit tests, loaded once for the alert suite."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import yaml

from tests.alerts.conftest import RULE_TESTS, RULES


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    expr: str
    duration: str | None  # `for`
    labels: dict[str, str]
    annotations: dict[str, str]


@cache
def alerts() -> tuple[Alert, ...]:
    document = yaml.safe_load(RULES.read_text())
    return tuple(
        Alert(
            rule["alert"],
            group["name"],
            rule["expr"],
            rule.get("for"),
            rule.get("labels", {}),
            rule.get("annotations", {}),
        )
        for group in document["groups"]
        for rule in group["rules"]
    )


def unit_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return tests
