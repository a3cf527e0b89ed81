"""The docs run: every block marked runnable in README.md and docs/ runs against a real Router.

A shell block preceded by ``<!-- runnable -->`` is run as written with bash (``set -euo
pipefail``, and ``curl`` failing on an HTTP error) from the repository root, against one
`natsrouter run` started here from the repository root with the example policies, as
``scripts/run`` would. Only what would collide with other processes on this host is the
test's own: the ports (``:8080``, ``:9001`` and the embedded server's 4222, given through
``ROUTER_*`` variables) and the log file (``router.log``). A TOML block preceded by
``<!-- natsrouter.example.toml -->`` must be that file, word for word, and passes
``natsrouter check-config``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from natsrouter.embedded import free_port
from tests.conftest import ADMIN_TOKEN
from tests.helpers.process import NATSROUTER

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = ROOT / "natsrouter.example.toml"
MARKED = re.compile(
    r"^(?P<indent> *)<!-- (?P<mark>runnable|natsrouter\.example\.toml) -->\n"
    r"(?P=indent)```(?P<lang>sh|toml)\n(?P<body>.*?)^(?P=indent)```",
    re.M | re.S,
)
SH_BLOCK = re.compile(r"^(?P<indent> *)```sh\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


@dataclass(frozen=True)
class Block:
    where: str  # page:line
    mark: str
    text: str


def marked_blocks() -> list[Block]:
    blocks = []
    for page in PAGES:
        source = page.read_text()
        for match in MARKED.finditer(source):
            line = source[: match.start()].count("\n") + 1
            body = textwrap.dedent(match["body"])
            blocks.append(Block(f"{page.relative_to(ROOT)}:{line}", match["mark"], body))
    return blocks


RUNNABLE = [b for b in marked_blocks() if b.mark == "runnable"]
CONFIGS = [b for b in marked_blocks() if b.mark == "natsrouter.example.toml"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}


@dataclass
class Running:
    env: dict[str, str]  # what the commands see: the same ROUTER_* ports as the Router
    http_port: int
    metrics_port: int
    log: Path

    def rewrite(self, script: str) -> str:
        script = re.sub(r"\b(localhost|127\.0\.0\.1):8080\b", rf"\1:{self.http_port}", script)
        script = re.sub(r"\b(localhost|127\.0\.0\.1):9001\b", rf"\1:{self.metrics_port}", script)
        return re.sub(r"\brouter\.log\b", str(self.log), script)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`natsrouter run` from the repository root (its policies), on ports of its own."""
    tmp = tmp_path_factory.mktemp("docs")
    http_port, metrics_port = free_port(), free_port()
    env = {
        **clean_env(),
        "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
        "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp / "store"),
        "ROUTER_HTTP_PORT": str(http_port),
        "ROUTER_METRICS_HOST": "127.0.0.1",
        "ROUTER_METRICS_PORT": str(metrics_port),
        "ROUTER_NATS_FAULT_INJECTION_ENABLED": "true",  # docs/faults.md's block
        "ROUTER_NATS_FAULT_INJECTION_TOKEN": ADMIN_TOKEN,
        # Durable by default: keep the spool out of the checkout.
        "ROUTER_NATS_PENDING_SPOOL_PATH": str(tmp / "spool.db"),
    }
    log = tmp / "router.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [NATSROUTER, "run"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while not _ready(metrics_port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "not ready in 30 s:\n" + log.read_text()
            time.sleep(0.05)
        yield Running(env, http_port, metrics_port, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PRELUDE = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.where for b in RUNNABLE])
def test_runnable_block_runs(block: Block, router: Running) -> None:
    """The block exits 0 against a running Router (HTTP errors fail it)."""
    if re.search(r"\bjq\b", block.text) and shutil.which("jq") is None:
        pytest.skip("the block needs jq (the page says so) and it is not installed")
    done = subprocess.run(
        ["bash", "-c", PRELUDE + router.rewrite(block.text)],
        cwd=ROOT,
        env=router.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{block.where}\n{done.stdout}\n{done.stderr}"


def test_the_readme_and_docs_have_runnable_blocks() -> None:
    """The README's first steps and the pages with commands are marked runnable."""
    pages = {b.where.split(":")[0] for b in RUNNABLE}
    assert {"README.md", "docs/faults.md", "docs/metrics.md", "docs/monitoring.md"} <= pages
    assert sum(1 for b in RUNNABLE if b.where.startswith("README.md")) == 2


def test_no_shell_block_needs_what_the_set_up_does_not_install() -> None:
    """No shell block runs the separate nats CLI, or natsrouter from PATH."""
    offending = [
        f"{page.name}: {line}"
        for page in PAGES
        for match in SH_BLOCK.finditer(page.read_text())
        for line in textwrap.dedent(match["body"]).splitlines()
        if re.match(r"(\S+=\S+ )*(nats|natsrouter) ", line)
    ]
    assert offending == []


def test_production_blocks_are_the_example_file() -> None:
    """configuration.md and operations.md hold natsrouter.example.toml word for word."""
    assert sorted(b.where.split(":")[0] for b in CONFIGS) == [
        "docs/configuration.md",
        "docs/operations.md",
    ]
    for block in CONFIGS:
        assert block.text == EXAMPLE.read_text(), block.where


def test_example_configuration_passes_check_config() -> None:
    """natsrouter check-config accepts natsrouter.example.toml (exit 0)."""
    done = subprocess.run(
        [NATSROUTER, "check-config", "--config", str(EXAMPLE)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "configuration OK: 3 policies in policies\n")
