"""What the end-to-end alert tests share: real ``natsrouter run`` processes for a real
Prometheus to scrape, the shipped rules with their ``for`` (and range windows) shortened, and
the one way the suite reaches ``/admin/faults``.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from natsrouter.embedded import free_port
from tests.alerts.conftest import RULES
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer

# Exhaustion within a second of a kill (status 0), reconnection within a second of a restart.
FAST_ENV = {
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "300",
    "ROUTER_NATS_RECONNECT_ATTEMPTS": "3",
    "ROUTER_NATS_PING_INTERVAL_MS": "500",
    "ROUTER_NATS_REQUEST_TIMEOUT_MS": "1000",
    "ROUTER_POLICIES_RELOAD_INTERVAL_MS": "200",
}
POLICY = {
    "providers": [{"name": "p1", "weight": 60}, {"name": "p2", "weight": 40}],
    "circuit_breaker": {"enabled": True, "failure_threshold": 3},
}

#: The token /admin/faults is called with; a Router with fault injection is started with it.
ADMIN_TOKEN = "alerts-suite-admin-token"
#: Settings of a Router whose faults the suite sets (the admin token setting goes here too).
FAULTS_ENV = {
    "ROUTER_NATS_FAULT_INJECTION_ENABLED": "true",
    "ROUTER_NATS_FAULT_INJECTION_TOKEN": ADMIN_TOKEN,
}


def start_router(home: Path, nats_url: str | None, **env: str) -> RouterProcess:
    """A ready ``natsrouter run`` with FAST_ENV and ``env`` (``ROUTER_*`` names), policy acme;
    without ``nats_url`` it runs its embedded nats-server on a free port."""
    policy = home / "policies" / "acme" / "default.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(json.dumps(POLICY))
    where = (
        {"ROUTER_NATS_URL": nats_url}
        if nats_url is not None
        else {"ROUTER_EMBEDDED_NATS_PORT": str(free_port())}
    )
    process = RouterProcess({**where, **FAST_ENV, **env}, home)
    process.wait(process.ready, 30, what="router ready")
    return process


def admin_faults(
    router: RouterProcess,
    method: str,
    target: str | None = None,
    fault: dict[str, Any] | None = None,
    token: str = ADMIN_TOKEN,
) -> dict[str, Any]:
    """Every /admin/faults call of the suite: POST sets ``fault`` on ``target``, DELETE clears
    ``target`` (all when None), GET lists. Fails the test on any status but 200."""
    path = "/admin/faults" + (f"/{target}" if method == "DELETE" and target else "")
    body = None if method != "POST" else json.dumps({"target": target, "fault": fault}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{router.metrics_port}{path}",
        data=body,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            document: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()}") from exc
    return document


def decide_body(request_id: str, push_assignment: bool = True) -> bytes:
    body = {
        "version": "1",
        "request_id": request_id,
        "tenant_id": "acme",
        "task": {"type": "text", "payload": {}},
        "push_assignment": push_assignment,
    }
    return json.dumps(body).encode()


def decide_http(router: RouterProcess, request_id: str) -> dict[str, Any]:
    request = urllib.request.Request(router.decide_url, data=decide_body(request_id))
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


_RANGE = re.compile(r"\[(\d+)m\]")


def fast_rules(tmp: Path, for_: str = "2s", window_divisor: int = 0, for_divisor: int = 0) -> Path:
    """The shipped rules with every ``for`` set to ``for_`` (or, with ``for_divisor``, each
    ``Nm`` cut to ``N*60/for_divisor`` seconds, which keeps their order) and, with
    ``window_divisor``, every range window ``[Nm]`` cut likewise, so that an increase()
    alert resolves soon after its fault is gone. Thresholds and expressions stay as shipped."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                minutes = int(str(rule["for"]).removesuffix("m"))
                rule["for"] = f"{minutes * 60 // for_divisor}s" if for_divisor else for_
            if window_divisor:
                rule["expr"] = _RANGE.sub(
                    lambda m: f"[{int(m.group(1)) * 60 // window_divisor}s]", rule["expr"]
                )
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def alerts_of(prometheus: PrometheusServer, name: str, instance: str) -> list[dict[str, Any]]:
    """Active alerts (pending or firing) called ``name`` of one scrape target."""
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == name and alert["labels"]["instance"] == instance
    ]


def firing(prometheus: PrometheusServer, name: str, instance: str) -> list[dict[str, Any]]:
    return [a for a in alerts_of(prometheus, name, instance) if a["state"] == "firing"]
