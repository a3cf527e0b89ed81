"""``natsrouter verify-metrics``: check a live ``/metrics`` against the metrics we declare.

The expected set is not a second list to keep in step: it is what ``LinkMetrics`` and
``RouterMetrics`` register, read from a fresh registry, with each family's type. A scrape
passes when every one of them is present with that type; extra families are fine (a process
may export more, e.g. the Python collectors of another registry).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from natsrouter.observability.metrics import LinkMetrics, RouterMetrics


def expected_families() -> dict[str, str]:
    """Family name (as the parser reports it: counters without ``_total``) → type."""
    registry = CollectorRegistry()
    LinkMetrics(registry)
    RouterMetrics(registry)
    return {family.name: family.type for family in registry.collect()}


def shown_name(name: str, kind: str) -> str:
    """The name as /metrics shows it and the docs write it: a counter with ``_total``."""
    return f"{name}_total" if kind == "counter" else name


@dataclass(frozen=True)
class Verdict:
    checked: int
    missing: tuple[str, ...]  # "name (type)"
    wrong_type: tuple[str, ...]  # "name: exported as X, expected Y"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.wrong_type

    def lines(self) -> list[str]:
        if self.ok:
            return [f"OK: all {self.checked} natsrouter metrics present with their types"]
        out = [f"missing: {m}" for m in self.missing]
        out += [f"wrong type: {w}" for w in self.wrong_type]
        out.append(
            f"FAILED: {len(self.missing)} missing, {len(self.wrong_type)} of the wrong type,"
            f" out of {self.checked}"
        )
        return out


def verify(exposition: str) -> Verdict:
    """Compare a Prometheus text exposition with ``expected_families()``.

    Raises ``ValueError`` when the text is not a Prometheus exposition.
    """
    found = {family.name: family.type for family in text_string_to_metric_families(exposition)}
    expected = expected_families()
    missing = tuple(
        f"{shown_name(name, kind)} ({kind})"
        for name, kind in sorted(expected.items())
        if name not in found
    )
    wrong = tuple(
        f"{shown_name(name, kind)}: exported as {found[name]}, expected {kind}"
        for name, kind in sorted(expected.items())
        if name in found and found[name] != kind
    )
    return Verdict(len(expected), missing, wrong)


def fetch(url: str, timeout_s: float) -> str:
    """GET ``url``; raises ``OSError`` (with the reason) when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body: bytes = resp.read()
    except urllib.error.HTTPError as exc:
        raise OSError(f"HTTP {exc.code} from {url}") from exc
    return body.decode("utf-8", errors="replace")
