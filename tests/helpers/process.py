"""`natsrouter run` as a real child process: start, SIGKILL, restart, read its stderr and HTTP.

Used by the CLI tests and the chaos suite. Ports are fixed when the object is built, so a
restarted process answers where the old one did; stderr (JSON lines) is appended across
restarts, so one file tells the whole story.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from natsrouter.embedded import free_port

NATSROUTER = str(Path(sys.executable).parent / "natsrouter")
DEMO_POLICY = {"providers": [{"name": "p1", "weight": 1}]}


def child_pids(parent: int, name: str) -> list[int]:
    """Live children of ``parent`` whose command is ``name`` (read from /proc, Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == parent and comm == name and state != "Z":
            found.append(int(entry.name))
    return sorted(found)


class RouterProcess:
    """A `natsrouter run` process with its stderr collected line by line."""

    def __init__(self, env: dict[str, str], tmp: Path, *, start: bool = True) -> None:
        self.tmp = tmp
        self.metrics_port = free_port()
        self.http_port = free_port()
        self.stderr_path = tmp / "stderr.log"
        policy = tmp / "policies" / "acme" / "default.json"
        if not policy.exists():
            policy.parent.mkdir(parents=True)
            policy.write_text(json.dumps(DEMO_POLICY))
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        self.env = {
            **base,
            "ROUTER_METRICS_HOST": "127.0.0.1",
            "ROUTER_METRICS_PORT": str(self.metrics_port),
            "ROUTER_HTTP_PORT": str(self.http_port),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> None:
        with self.stderr_path.open("ab") as err:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [NATSROUTER, "run"],
                env=self.env,
                cwd=self.tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def nats_children(self) -> list[int]:
        """Process ids of the embedded nats-servers this Router runs now."""
        return child_pids(self.pid, "nats-server") if self.alive else []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def decide_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/decide"

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr_path.read_text().splitlines()]

    def codes(self) -> list[str]:
        return [line["error_code"] for line in self.lines() if "error_code" in line]

    def _auth(self) -> dict[str, str]:
        """The admin bearer token, when the process has one (sent on every operator call)."""
        token = self.env.get("ROUTER_NATS_FAULT_INJECTION_TOKEN")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}{path}", headers=self._auth()
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.metrics_port}{path}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **self._auth()},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        document: dict[str, Any] = json.loads(body)
        return document

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (name, sorted labels)."""
        code, body = self.get("/metrics")
        assert code == 200, body
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait(self, condition: Any, timeout_s: float = 15, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"timed out waiting for {what}; stderr:\n" + self.stderr_path.read_text()[-3000:]
        )

    def ready(self) -> bool:
        try:
            return self.get("/health/ready")[0] == 200
        except OSError:  # not listening yet
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)
