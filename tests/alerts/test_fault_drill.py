"""The fault drill of docs/operations.md runs as written against a real Router.

Its commands are read from the page (inline ``curl`` and ``.venv/bin/natsrouter`` commands
and its shell blocks, in order) and run with bash, with only ``staging-router`` replaced by
the Router's loopback address and ``$auth`` / ``$json`` set as the page says. Between the
commands the test checks what each step promises the operator: the baseline output, the
share of ``failed`` assignments, ``queued`` while NATS is unreachable, the replay with
``failed_count`` 0 and a balanced ledger. The alerts the drill names fire from the same
faults in tests/alerts/test_alerts_fire.py.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from tests.alerts.conftest import ROOT
from tests.alerts.stack import ADMIN_TOKEN, FAULTS_ENV, decide_http, start_router
from tests.helpers.process import NATSROUTER, RouterProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OPERATIONS = ROOT / "docs" / "operations.md"
_COMMAND = re.compile(
    r"```sh\n(?P<block>.*?)\n\s*```|`(?P<inline>(?:curl|\.venv/bin/natsrouter) [^`]+)`", re.S
)


def drill() -> str:
    text = OPERATIONS.read_text()
    return text.split("## Fault-injection drill on a staging Router")[1].split("\n## ")[0]


def drill_commands() -> list[str]:
    """Every command of the drill, in the page's order (continuation lines joined)."""
    commands: list[str] = []
    for match in _COMMAND.finditer(drill()):
        if match["inline"]:
            commands.append(match["inline"])
            continue
        joined = re.sub(r"\\\n\s*", "", match["block"])
        commands.extend(line.strip() for line in joined.splitlines() if line.strip())
    return commands


def expected_ready() -> str:
    """What the page says /health/ready answers during the baseline."""
    found = re.search(r"`curl -s staging-router:9001/health/ready` is `([^`]+)`", drill())
    assert found is not None, "the drill's baseline line changed"
    return found[1]


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    # Never exhausted (attempts 0): the page's step 4 watches status 0.5, decides queued.
    process = start_router(
        tmp_path / "router", server.url, ROUTER_NATS_RECONNECT_ATTEMPTS="0", **FAULTS_ENV
    )
    try:
        yield process
    finally:
        process.kill()
        server.stop()


def run(router: RouterProcess, command: str) -> str:
    """Run one of the drill's commands as written; its stdout (a non-zero exit fails)."""
    prelude = f'auth="Authorization: Bearer {ADMIN_TOKEN}"\njson="Content-Type: application/json"\n'
    script = command.replace("staging-router:9001", f"127.0.0.1:{router.metrics_port}")
    script = script.replace(".venv/bin/natsrouter", NATSROUTER)
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + prelude + script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def outcomes(router: RouterProcess, prefix: str, n: int) -> list[str]:
    return [decide_http(router, f"{prefix}{i}")["assignment"]["outcome"] for i in range(n)]


def test_the_drill_reads_the_commands_this_test_runs() -> None:
    """The page's drill is seven commands: baseline, step 3's fault and end, step 4, restore."""
    commands = drill_commands()
    assert [re.sub(r"staging-router:9001\S*", "R", c).split(" -d ")[0] for c in commands] == [
        ".venv/bin/natsrouter verify-metrics http://R",
        "curl -s R",
        'curl -s -H "$auth" -H "$json" -XPOST R',
        'curl -s -H "$auth" -XDELETE R',
        'curl -s -H "$auth" -H "$json" -XPOST R',
        'curl -s -H "$auth" -H "$json" -XPOST R',
        'curl -s -H "$auth" -XDELETE R',
    ]


def test_the_fault_drill_runs_as_written(router: RouterProcess) -> None:
    """Each step of the drill gives the operator what the page promises."""
    verify, ready, flaky, end, unreachable, drop, restore = drill_commands()
    r = router
    run(r, verify)  # step 2: exits 0
    assert run(r, ready).strip() == expected_ready()

    run(r, flaky)  # step 3: about a fifth of the assignments answer failed
    seen = outcomes(r, "s3-", 50)
    assert set(seen) <= {"sent", "failed"}
    assert 1 <= seen.count("failed") <= 25, seen
    run(r, end)
    assert outcomes(r, "s3-after-", 3) == ["sent"] * 3

    run(r, unreachable)  # step 4: the next JetStream publish drops the connection
    run(r, drop)
    assert outcomes(r, "s4-", 3) == ["queued"] * 3
    r.wait(lambda: r.metric("router_nats_connection_status") == 0.5, what="status 0.5")
    assert r.metric("router_nats_pending_operations") == 3

    run(r, restore)  # step 5: reconnect, replay with failed_count 0, the ledger balances
    r.wait(lambda: "NATS_RETRY_COMPLETE" in r.codes(), what="replay complete")
    assert "NATS_CONNECTION_RESTORED" in r.codes()
    complete = [line for line in r.lines() if line.get("error_code") == "NATS_RETRY_COMPLETE"]
    assert [(c["success_count"], c["failed_count"]) for c in complete] == [(3, 0)]
    metrics = r.metrics()
    ended = sum(
        value
        for (name, _), value in metrics.items()
        if name == "router_nats_publishes_outcome_total"
    )
    assert r.metric("router_nats_publishes_accepted_total") == ended + r.metric(
        "router_nats_pending_operations_count"
    )
    assert r.metric("router_nats_publishes_outcome_total", outcome="dropped") == 0
