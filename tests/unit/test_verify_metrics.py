"""verify-metrics' comparison: every declared family present, with its type."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.observability.verify import expected_families, verify


def full_exposition() -> str:
    registry = CollectorRegistry()
    LinkMetrics(registry)
    RouterMetrics(registry)
    return generate_latest(registry).decode()


def without(text: str, family: str) -> str:
    """The exposition with every line of one family removed."""
    return (
        "\n".join(
            line
            for line in text.splitlines()
            if not (
                line.startswith(family)
                or line.startswith(f"# HELP {family}")
                or line.startswith(f"# TYPE {family}")
            )
        )
        + "\n"
    )


def test_the_full_exposition_passes() -> None:
    verdict = verify(full_exposition())
    assert verdict.ok
    assert verdict.checked == len(expected_families()) > 50
    assert verdict.lines() == [
        f"OK: all {verdict.checked} natsrouter metrics present with their types"
    ]


def test_a_missing_family_is_named_with_its_type() -> None:
    text = without(without(full_exposition(), "router_nats_connection_status"), "router_dlq_total")
    verdict = verify(text)
    assert verdict.missing == (
        "router_dlq_total (counter)",
        "router_nats_connection_status (gauge)",
    )
    assert verdict.wrong_type == ()
    assert (
        verdict.lines()[-1] == f"FAILED: 2 missing, 0 of the wrong type, out of {verdict.checked}"
    )


def test_a_family_of_another_type_is_named() -> None:
    text = full_exposition().replace(
        "# TYPE router_policies_loaded gauge", "# TYPE router_policies_loaded untyped"
    )
    verdict = verify(text)
    assert verdict.missing == ()
    assert verdict.wrong_type == ("router_policies_loaded: exported as unknown, expected gauge",)


def test_extra_families_are_fine() -> None:
    text = full_exposition() + "# TYPE other_thing gauge\nother_thing 1.0\n"
    assert verify(text).ok


def test_text_that_is_not_an_exposition_raises() -> None:
    with pytest.raises(ValueError):
        verify("<html>not metrics</html>\n")
