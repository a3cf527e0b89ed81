"""`natsrouter decide` against a real `natsrouter run`: over NATS and HTTP, exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsrouter.embedded import free_port
from tests.helpers.process import NATSROUTER, RouterProcess
from tests.integration.test_request_command import env_with

pytestmark = pytest.mark.integration


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    """A `natsrouter run` with its embedded nats-server and the demo policy for acme."""
    process = RouterProcess(
        {
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp_path / "store"),
        },
        tmp_path,
    )
    try:
        process.wait(process.ready, what="ready")
        yield process
    finally:
        process.kill()


def run_decide(router: RouterProcess, *args: str) -> tuple[int, str, str]:
    env = env_with(
        embedded_nats_port=router.env["ROUTER_EMBEDDED_NATS_PORT"],
        http_port=router.env["ROUTER_HTTP_PORT"],
    )
    done = subprocess.run(
        [NATSROUTER, "decide", *args], env=env, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def test_decide_over_nats_prints_the_decision(router: RouterProcess) -> None:
    """--tenant acme with metadata: exit 0, the DecideResponse for p1 with the request's id."""
    code, out, err = run_decide(
        router, "--tenant", "acme", "--request-id", "cli-1", "--metadata", "session_id=s1"
    )
    assert (code, err) == (0, "")
    answer = json.loads(out)
    assert (answer["ok"], answer["decision"]["provider_id"]) == (True, "p1")
    assert answer["context"]["request_id"] == "cli-1"


def test_decide_over_http_pushes_an_assignment(router: RouterProcess) -> None:
    """--http --push: exit 0 and the assignment stored (outcome sent)."""
    code, out, err = run_decide(router, "--tenant", "acme", "--push", "--http")
    assert (code, err) == (0, "")
    assert json.loads(out)["assignment"]["outcome"] == "sent"
    assert router.metric("router_decide_duration_seconds_count", transport="http") == 1


def test_decide_error_answer_exits_1_and_prints_it(router: RouterProcess) -> None:
    """An unknown policy: the ErrorResponse policy_not_found on stdout, exit 1."""
    code, out, _ = run_decide(router, "--tenant", "acme", "--policy", "nope")
    assert code == 1
    assert json.loads(out)["error"]["code"] == "policy_not_found"


def test_decide_without_tenant_or_with_bad_metadata_exits_2() -> None:
    """No --tenant, or --metadata without '=': exit 2 naming the option; nothing sent."""
    for args, message in (
        ([], "natsrouter: decide: --tenant (or --body) is required\n"),
        (
            ["--tenant", "acme", "--metadata", "oops"],
            "natsrouter: decide: --metadata 'oops': expected key=value\n",
        ),
    ):
        done = subprocess.run(
            [NATSROUTER, "decide", *args],
            env=env_with(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (done.returncode, done.stdout, done.stderr) == (2, "", message)
