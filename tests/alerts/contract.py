"""The series a Prometheus scraping natsrouter can hold, read from the metric declarations.

Not a second list: a fresh registry with ``LinkMetrics`` and ``RouterMetrics`` says which
families exist, their types and labels; the exposed series follow the exposition format
(a counter as ``_total``, a histogram as ``_bucket``/``_sum``/``_count``). Label values are
those the code primes at start; a label whose values are not primed (``provider``) is open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from natsrouter.observability.metrics import LinkMetrics, RouterMetrics

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def kept_names() -> dict[str, tuple[str, str]]:
    """docs/metrics.md's "Names kept from the contract": kept → (promtool's complaint, the
    lint-clean name exported beside it). Alerts and panels use the lint-clean name."""
    text = METRICS_DOC.read_text()
    section = text.split("## Names kept from the contract")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `(router_[a-z_]+)` \| (.+?) \| `(router_[a-z_]+)` \|$", section, re.M)
    return {kept: (complaint, clean) for kept, complaint, clean in rows}


#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})

_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass(frozen=True)
class Contract:
    #: exposed series name → its label names (without instance/job)
    labels: dict[str, frozenset[str]]
    #: (series name, label) → the values it can take, when they are known
    values: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def all_labels(self) -> frozenset[str]:
        return frozenset().union(*self.labels.values(), TARGET_LABELS)


def _declared_labels(*containers: object) -> dict[str, tuple[str, ...]]:
    """Family name → label names, from the metric objects (also those without samples yet)."""
    out: dict[str, tuple[str, ...]] = {}
    for container in containers:
        for value in vars(container).values():
            members = value.values() if isinstance(value, dict) else [value]
            for metric in members:
                if isinstance(metric, MetricWrapperBase):
                    out[metric._name] = tuple(metric._labelnames)
    return out


@cache
def contract() -> Contract:
    registry = CollectorRegistry()
    declared = _declared_labels(LinkMetrics(registry), RouterMetrics(registry))
    labels: dict[str, set[str]] = {}
    values: dict[tuple[str, str], set[str]] = {}
    for family in registry.collect():
        base = set(declared.get(family.name, ()))
        for sample in family.samples:
            base.update(k for k in sample.labels if k != "le")
        for suffix in _SUFFIXES[family.type]:
            name = family.name + suffix
            labels[name] = base | ({"le"} if suffix == "_bucket" else set())
        for sample in family.samples:
            for key, value in sample.labels.items():
                if key != "le":
                    values.setdefault((sample.name, key), set()).add(value)
    return Contract(
        {name: frozenset(names) for name, names in labels.items()},
        {key: frozenset(found) for key, found in values.items()},
    )
