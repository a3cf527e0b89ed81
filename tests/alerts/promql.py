"""Names a PromQL expression uses, and whether they are all in the contract.

Parsing proper is promtool's job (test_rules and test_dashboard run every expression through
it); this only lifts out what the contract check needs: series names (every natsrouter series
starts with ``router_``, no function or label does), label matchers and grouping labels.
"""

from __future__ import annotations

import re

from tests.alerts.contract import TARGET_LABELS, Contract

_SERIES = re.compile(r"\b(router_[a-z0-9_]+)\b(\s*\{([^}]*)\})?")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def series(expr: str) -> set[str]:
    return {m.group(1) for m in _SERIES.finditer(expr)}


def problems(expr: str, contract: Contract) -> list[str]:
    """What in ``expr`` the contract does not have; empty when all of it is there."""
    found: list[str] = []
    for match in _SERIES.finditer(expr):
        name, matchers = match.group(1), match.group(3) or ""
        if name not in contract.labels:
            found.append(f"unknown series {name}")
            continue
        known = contract.labels[name] | TARGET_LABELS
        for label, op, value in _MATCHER.findall(matchers):
            if label not in known:
                found.append(f"{name} has no label {label}")
            allowed = contract.values.get((name, label))
            if op in ("=", "!=") and allowed is not None and value not in allowed:
                found.append(f"{name}{{{label}}} never takes the value {value!r}")
    everything = contract.all_labels() | {"le"}
    grouped = {part.strip() for group in _GROUPING.findall(expr) for part in group.split(",")}
    found.extend(
        f"grouping by unknown label {label}" for label in sorted(grouped - everything - {""})
    )
    return found
