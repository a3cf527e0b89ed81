"""The README's hostile-input table, at a small scale: bench/hostile_input.py passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).parents[2] / "bench" / "hostile_input.py"


def test_hostile_input_against_a_real_router_finds_no_crash_500_or_non_json() -> None:
    """50 decides per transport, 30 acks and results, 10 policy files and every named case:
    exit 0, and every row reads 0 crashes, 0 500s, 0 non-JSON messages, 0 failed checks."""
    args = ["--decides", "50", "--worker", "30", "--policies", "10"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=100
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| NATS decide",
        "| HTTP decide",
        "| acks and results",
        "| policy files",
    ]
    tails = [row.split(" | ")[-4:] for row in rows]
    assert tails == [
        ["0", "n/a", "0", "0 |"],
        ["0", "0", "0", "0 |"],
        ["0", "n/a", "0", "0 |"],
        ["0", "n/a", "n/a", "0 |"],
    ]
