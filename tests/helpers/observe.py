"""Read what the link reported: log codes and metric samples."""

from __future__ import annotations

from typing import Any

from natsrouter.link import Link
from natsrouter.service.router import Router


def codes(events: list[dict[str, Any]]) -> list[str]:
    """The error codes of captured log events, in order."""
    return [e["error_code"] for e in events if "error_code" in e]


def rmetric(router: Router, name: str, **labels: str) -> float:
    """A sample's value from a Router's registry (shared with its link; 0.0 when absent)."""
    return metric(router.link, name, **labels)


def metric(link: Link, name: str, **labels: str) -> float:
    """A sample's value from the link's own registry (0.0 when absent)."""
    value = link.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value
