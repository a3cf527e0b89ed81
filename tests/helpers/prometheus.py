"""A real Prometheus server (Debian's ``prometheus``) on a free loopback port, for tests.

It scrapes the given targets every second and evaluates the given rule file every second,
sending alerts to an Alertmanager when one is given; ``query``, ``query_range`` and ``alerts``
read its HTTP API.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from natsrouter.embedded import free_port
from tests.helpers.ready_process import start_until_ready, stop


class PrometheusServer:
    def __init__(
        self,
        binary: str,
        tmp: Path,
        targets: list[str],
        rule_file: Path,
        alertmanager: str | None = None,
    ) -> None:
        self.binary = binary
        self.tmp = tmp
        self.port = free_port()
        self.config = tmp / "prometheus.yml"
        self.log = tmp / "prometheus.log"
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(rule_file)],
            "scrape_configs": [
                {"job_name": "natsrouter", "static_configs": [{"targets": targets}]}
            ],
        }
        if alertmanager is not None:  # host:port
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        self.config.write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> None:
        argv = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self._proc = start_until_ready(
            "prometheus", argv, self.log, f"{self.url}/-/ready", timeout_s
        )

    def stop(self) -> None:
        stop(self._proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            document = json.loads(resp.read())
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query, now or ``at`` (Unix seconds)."""
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        result: list[dict[str, Any]] = self._get("/api/v1/query", **params)["result"]
        return result

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._get(
            "/api/v1/query_range", query=expr, start=str(start), end=str(end), step="1s"
        )["result"]
        return result

    def wait(self, condition: Callable[[], object], timeout_s: float, what: str) -> None:
        """Poll ``condition`` (every 0.2 s) until truthy; fail with Prometheus' log."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what}; prometheus log:\n"
                    + self.log.read_text()[-2000:]
                )
            time.sleep(0.2)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing); a resolved alert is no longer listed."""
        found: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return found
