"""Watching alerts of a real Prometheus (and the Alertmanager it sends to) from several
fault scenarios at once.

Each scenario runs in its own thread against its own Routers; ``Watch`` waits for an alert
of one instance to fire or to resolve and keeps when that happened, the labels it fired with
and whether Alertmanager inhibited it, for the assertions and for build/alerts-report.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.helpers.alertmanager import AlertmanagerServer
from tests.helpers.prometheus import PrometheusServer


@dataclass
class Record:
    alert: str
    instance: str
    fault: str
    fault_at: float
    fired_at: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    cleared_at: float | None = None
    resolved_at: float | None = None
    inhibited: bool = False  # seen suppressed by an inhibit rule in Alertmanager
    receivers: list[str] = field(default_factory=list)  # reached by a firing notification
    receivers_during: list[str] = field(default_factory=list)  # the same, before cleared_at

    @property
    def to_fire_s(self) -> float | None:
        return None if self.fired_at is None else self.fired_at - self.fault_at

    @property
    def to_resolve_s(self) -> float | None:
        if self.resolved_at is None or self.cleared_at is None:
            return None
        return self.resolved_at - self.cleared_at


class Watch:
    """Polls /api/v1/alerts every 0.2 s in a thread: an alert's firing and resolved times are
    when the poll first saw them, whichever scenario is waiting at that moment."""

    def __init__(
        self,
        prometheus: PrometheusServer,
        alertmanager: AlertmanagerServer | None = None,
        timeout_s: float = 60,
        reached: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.prometheus = prometheus
        self.alertmanager = alertmanager
        #: (alert, instance) -> a firing notification of it reached a receiver (``notified``).
        self.reached = reached
        self.timeout_s = timeout_s
        self.records: dict[tuple[str, str], Record] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, daemon=True)
        self._last: list[dict[str, Any]] = []

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll_loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                active = self.prometheus.alerts()
                held = self.alertmanager.alerts() if self.alertmanager else []
            except OSError:
                continue
            now = time.time()
            keys = {(a["labels"]["alertname"], a["labels"].get("instance", "")) for a in active}
            with self._lock:
                self._last = active
                for alert in active:
                    key = (alert["labels"]["alertname"], alert["labels"].get("instance", ""))
                    record = self.records.get(key)
                    if record and alert["state"] == "firing" and record.fired_at is None:
                        record.fired_at, record.labels = now, alert["labels"]
                for alert in held:
                    key = (alert["labels"]["alertname"], alert["labels"].get("instance", ""))
                    if key in self.records and alert["status"]["inhibitedBy"]:
                        self.records[key].inhibited = True
                for key, record in self.records.items():
                    done = record.fired_at is not None and record.cleared_at is not None
                    if done and record.resolved_at is None and key not in keys:
                        record.resolved_at = now

    def fault(self, alerts: list[str], instance: str, fault: str) -> None:
        """The fault behind ``alerts`` of ``instance`` starts now."""
        now = time.time()
        with self._lock:
            for alert in alerts:
                self.records[(alert, instance)] = Record(alert, instance, fault, now)

    def cleared(self, alerts: list[str], instance: str) -> None:
        """The fault behind ``alerts`` (each seen firing) is gone now."""
        self.fired(alerts, instance)
        now = time.time()
        with self._lock:
            for alert in alerts:
                self.records[(alert, instance)].cleared_at = now

    def _wait(self, done: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            with self._lock:
                if done():
                    return
                last = [(a["labels"], a["state"]) for a in self._last]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {self.timeout_s}s waiting for {what}; active: {last}"
                )
            time.sleep(0.1)

    def fired(self, alerts: list[str], instance: str) -> None:
        """Wait until each of ``alerts`` of ``instance`` has been seen firing."""
        records = [self.records[(alert, instance)] for alert in alerts]
        self._wait(
            lambda: all(r.fired_at is not None for r in records), f"{alerts} {instance} firing"
        )

    def notified(self, alerts: list[str], instance: str) -> None:
        """Wait until a firing notification of each of ``alerts`` of ``instance`` reached its
        receiver. Called before the fault is removed: an alert that resolves before
        Alertmanager's group wait flushed is never notified."""
        reached = self.reached
        assert reached is not None, "Watch(reached=...) tells where notifications arrived"
        self._wait(
            lambda: all(reached(alert, instance) for alert in alerts),
            f"{alerts} {instance} notified",
        )

    def inhibited(self, alerts: list[str], instance: str) -> None:
        """Wait until Alertmanager has suppressed each of ``alerts`` of ``instance`` (its
        notification pipeline ran for them and an inhibit rule muted them)."""
        records = [self.records[(alert, instance)] for alert in alerts]
        self._wait(lambda: all(r.inhibited for r in records), f"{alerts} {instance} inhibited")

    def resolved(self, alerts: list[str], instance: str) -> None:
        """Wait until none of ``alerts`` of ``instance`` is active any more."""
        records = [self.records[(alert, instance)] for alert in alerts]
        self._wait(
            lambda: all(r.resolved_at is not None for r in records),
            f"{alerts} {instance} resolved",
        )
