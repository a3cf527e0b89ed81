"""The alert rules: promtool accepts them, their unit tests pass and can fail, and they name
only what natsrouter exports, with the labels and runbook links the routing relies on."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.alerts.conftest import (
    ALERTMANAGER_EXAMPLE,
    PROMETHEUS_EXAMPLE,
    RULE_TESTS,
    RULES,
)
from tests.alerts.contract import contract, kept_names
from tests.alerts.promql import problems, series
from tests.alerts.rules import alerts, unit_tests

Tool = Callable[[str], str]
NAMES = [alert.name for alert in alerts()]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_every_rule(tool: Tool) -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(NAMES)} rules found" in result.stdout


def test_promtool_unit_tests_pass(tool: Tool) -> None:
    result = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests():
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert sorted(firing) == sorted(NAMES)
    assert sorted(quiet) == sorted(NAMES)


def _mutated_run(tool: Tool, tmp_path: Path, name: str, change: dict[str, str | None]) -> str:
    """Run the unit tests against a copy of the rules where alert ``name`` has ``change``
    (a key set to None is removed)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == name:
                rule.update({k: v for k, v in change.items() if v is not None})
                for key in [k for k, v in change.items() if v is None]:
                    rule.pop(key, None)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(document))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    result = run(tool("promtool"), "test", "rules", str(tmp_path / RULE_TESTS.name))
    assert result.returncode != 0, f"the unit tests did not notice a broken {name}"
    return result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_unit_tests_fail_when_the_alert_never_fires(tool: Tool, tmp_path: Path, name: str) -> None:
    original = next(a for a in alerts() if a.name == name)
    output = _mutated_run(tool, tmp_path, name, {"expr": "vector(0) > 1", "for": original.duration})
    assert f"alertname: {name}" in output


@pytest.mark.parametrize("name", [a.name for a in alerts() if a.duration])
def test_unit_tests_fail_when_the_for_duration_is_dropped(
    tool: Tool, tmp_path: Path, name: str
) -> None:
    output = _mutated_run(tool, tmp_path, name, {"for": None})
    assert f"alertname: {name}" in output


def test_alerts_name_only_series_and_labels_the_router_exports() -> None:
    found = {alert.name: problems(alert.expr, contract()) for alert in alerts()}
    assert {name: issues for name, issues in found.items() if issues} == {}


def test_alerts_use_the_lint_clean_name_not_a_kept_contract_name() -> None:
    """No alert reads a name docs/metrics.md keeps only for the contract."""
    used = {name for alert in alerts() for name in series(alert.expr)}
    assert "router_nats_pending_operations" in used
    assert used & set(kept_names()) == set()


def test_the_contract_check_itself_catches_unknown_names() -> None:
    assert problems('rate(router_nats_connection_failures{reason="x"}[5m])', contract()) == [
        "unknown series router_nats_connection_failures"
    ]
    assert problems(
        'sum by (tenant) (router_decide_total{outcome="okay",status="ok"})', contract()
    ) == [
        "router_decide_total{outcome} never takes the value 'okay'",
        "router_decide_total has no label status",
        "grouping by unknown label tenant",
    ]


def test_severity_component_and_runbook_of_every_alert() -> None:
    # The `### <AlertName>` section each anchor points at: tests/unit/test_docs_match_code.py.
    for alert in alerts():
        assert alert.labels == {
            "severity": alert.group.removeprefix("natsrouter-"),
            "component": "router",
        }, alert.name
        assert alert.annotations["runbook_url"] == f"docs/operations.md#{alert.name.lower()}"
        assert alert.annotations["summary"] and alert.annotations["description"]


def test_the_issue_asks_for_these_alerts() -> None:
    by_severity: dict[str, set[str]] = {}
    for alert in alerts():
        by_severity.setdefault(alert.labels["severity"], set()).add(alert.name)
    assert by_severity["critical"] == {
        "RouterNatsConnectionDown",
        "RouterNatsReconnectionExhausted",
        "RouterNatsPendingOperationsDropped",
        "RouterMaxDeliverExhausted",
        "RouterNatsPendingOperationsFailed",
        "RouterDeadLetterNotStored",
    }
    assert by_severity["warning"] >= {
        "RouterNatsPublishFailureRatioHigh",
        "RouterNatsPublishWithAckFailureRatioHigh",
        "RouterNatsPendingQueueNearFull",
        "RouterNatsReconnectFailureRatioHigh",
        "RouterNatsConnectionFlapping",
        "RouterDeadLetterRateHigh",
        "RouterNatsFailOpenActive",
        "RouterNatsDestinationBlocked",
        "RouterDecideOverloaded",
        "RouterEmbeddedNatsRestarted",
        "RouterSharedStateDegraded",
    }
    down = next(a for a in alerts() if a.name == "RouterNatsConnectionDown")
    assert (down.expr, down.duration) == ("router_nats_connection_status == 0", "1m")


def test_alertmanager_example_is_valid_and_routes_by_severity(tool: Tool) -> None:
    amtool = tool("amtool")
    result = run(amtool, "check-config", str(ALERTMANAGER_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    for severity, receiver in (("critical", "pager"), ("warning", "chat")):
        routed = run(
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_EXAMPLE}",
            f"severity={severity}",
            "component=router",
            "alertname=RouterNatsConnectionDown",
        )
        assert routed.returncode == 0, routed.stderr
        assert routed.stdout.strip() == receiver


def test_prometheus_example_config_is_valid(tool: Tool) -> None:
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(NAMES)} rules found" in result.stdout
