"""Fixtures of the alert suite: the Prometheus tools, required in CI, skipped only by hand.

Every test here is marked ``alerts``. A missing ``promtool``, ``amtool``, ``prometheus`` or
``prometheus-alertmanager`` skips a test on a developer machine that could not install them
(scripts/install-prometheus says why), and fails it where ``NATSROUTER_REQUIRE_PROMETHEUS=1``
or ``CI`` is set: CI must run these tests, never count them as passed without running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "natsrouter-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "natsrouter-alerts.test.yml"
PROMETHEUS_EXAMPLE = ROOT / "deploy" / "prometheus" / "prometheus.example.yml"
ALERTMANAGER_EXAMPLE = ROOT / "deploy" / "alertmanager" / "alertmanager.example.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "natsrouter.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.alerts)


def _required() -> bool:
    return os.environ.get("NATSROUTER_REQUIRE_PROMETHEUS") == "1" or bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """``tool("promtool")`` → its path; skip (by hand) or fail (CI) when it is missing."""

    def find(name: str) -> str:
        path = shutil.which(name)
        if path is not None:
            return path
        message = f"{name} not found: run scripts/install-prometheus (Debian prometheus packages)"
        if _required():
            pytest.fail(message + "; NATSROUTER_REQUIRE_PROMETHEUS/CI demands these tests run")
        pytest.skip(message)

    return find
