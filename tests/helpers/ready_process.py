"""A server binary as a child process: started, waited on until it answers ready, stopped.

Prometheus and Alertmanager both answer ``GET /-/ready`` with 200 once they serve; their
test helpers (``prometheus.py``, ``alertmanager.py``) start and stop them through here.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path


def start_until_ready(
    name: str, argv: list[str], log: Path, ready_url: str, timeout_s: float
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log``; return once ``ready_url`` gives 200.

    Raises ``RuntimeError`` with the log's tail when the process exits or is not ready in
    ``timeout_s``.
    """
    with log.open("ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready in {timeout_s}s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate ``proc`` if it still runs, and kill it after 10 s."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
