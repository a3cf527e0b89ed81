"""``promtool check metrics`` on a live scrape of a real ``natsrouter run``: the only lint
complaints are the names docs/metrics.md keeps from the contract, and their lint-clean twins
carry the same value."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from tests.alerts.contract import kept_names
from tests.alerts.stack import decide_http, start_router
from tests.helpers.process import RouterProcess

pytestmark = pytest.mark.integration


def without_families(page: str, names: set[str]) -> str:
    """The exposition without the HELP, TYPE and sample lines of ``names``."""

    def name_of(line: str) -> str:
        if line.startswith("# "):
            return line.split()[2]
        return re.split(r"[{ ]", line, maxsplit=1)[0]

    return "".join(line + "\n" for line in page.splitlines() if line and name_of(line) not in names)


def promtool_check(promtool: str, page: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def router(nats_server: NatsServer, tmp_path: Path) -> Iterator[RouterProcess]:
    process = start_router(tmp_path / "router", nats_server.url)
    try:
        yield process
    finally:
        process.kill()


def test_promtool_check_metrics_reports_only_the_documented_kept_names(
    tool: Callable[[str], str], router: RouterProcess
) -> None:
    """A live page fails promtool's lint only on the documented kept names, and passes without."""
    assert decide_http(router, "lint-1")["ok"] is True  # every family has seen traffic
    code, page = router.get("/metrics")
    assert code == 200
    kept = kept_names()
    assert set(kept) == {"router_nats_pending_operations_count"}

    full = promtool_check(tool("promtool"), page)
    complaints = sorted(line for line in (full.stdout + full.stderr).splitlines() if line)
    assert complaints == sorted(f"{name} {complaint}" for name, (complaint, _) in kept.items())

    rest = promtool_check(tool("promtool"), without_families(page, set(kept)))
    assert (rest.returncode, rest.stdout + rest.stderr) == (0, "")


def test_each_kept_name_carries_its_lint_clean_twins_value(
    nats_server: NatsServer, router: RouterProcess
) -> None:
    """During an outage the kept name and its lint-clean twin both show the queued count."""
    nats_server.kill()
    router.wait(lambda: router.metric("router_nats_connection_status") < 1, what="disconnected")
    outcomes = [decide_http(router, f"lint-q{n}")["assignment"]["outcome"] for n in range(3)]
    assert outcomes == ["queued"] * 3
    for kept, (_, clean) in kept_names().items():
        assert (router.metric(kept), router.metric(clean)) == (3, 3)
