"""`natsrouter request` and `scripts/run --config` as a user types them, as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer, free_port
from tests.conftest import RouterFactory
from tests.helpers.process import NATSROUTER

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def env_with(**router: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    return {**base, **{f"ROUTER_{k.upper()}": v for k, v in router.items()}}


async def natsrouter(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """Run the command without blocking the loop (a Router may be serving on it)."""
    proc = await asyncio.create_subprocess_exec(
        NATSROUTER, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_request_prints_the_reply(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A request a Router answers: its reply on stdout, exit 0."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    code, out, err = await natsrouter(
        "request", "$SRV.PING.router", env=env_with(nats_url=nats_server.url)
    )
    assert (code, err) == (0, "")
    assert json.loads(out)["id"] == router.nats_service.id


async def test_request_nobody_answers_exits_1(nats_server: NatsServer) -> None:
    """No subscriber on the subject: exit 1, the reason on stderr, nothing on stdout."""
    code, out, err = await natsrouter(
        "request", "nobody.listens", "{}", env=env_with(nats_url=nats_server.url)
    )
    assert (code, out) == (1, "")
    assert err == "natsrouter: request on nobody.listens failed: no_responders\n"


async def test_request_without_a_server_exits_1_naming_it() -> None:
    """No nats_url and nothing on the embedded port: exit 1 naming the address tried."""
    port = free_port()
    code, out, err = await natsrouter(
        "request", "a.b", "--timeout", "0.5", env=env_with(embedded_nats_port=str(port))
    )
    assert (code, out) == (1, "")
    assert err == f"natsrouter: no NATS server answered at nats://127.0.0.1:{port}\n"


def test_scripts_run_reads_a_relative_config_from_the_callers_directory(tmp_path: Path) -> None:
    """scripts/run --config FILE (and --config=FILE) finds FILE where the caller stands."""
    (tmp_path / "mine.toml").write_text('log_level = "loud"\n')
    for flag in (["--config", "mine.toml"], ["--config=mine.toml"]):
        done = subprocess.run(
            [str(ROOT / "scripts" / "run"), *flag],
            cwd=tmp_path,
            env=env_with(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert "log_level" in done.stderr
        assert "loud" in done.stderr


def test_help_lists_the_commands_in_plain_text() -> None:
    """`natsrouter --help` names every command and shows no reStructuredText markup."""
    done = subprocess.run(
        [NATSROUTER, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert "``" not in done.stdout
    assert "{run,check-config,request,decide,verify-metrics}" in done.stdout
