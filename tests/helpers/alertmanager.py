"""A real Alertmanager (Debian's ``prometheus-alertmanager``) and a webhook sink, for tests.

``WebhookSink`` is an aiohttp server on a free loopback port, run in a thread of its own:
every POST is kept with its path and JSON body, so a test can point each receiver of an
Alertmanager configuration at its own path (``/pager``, ``/chat``) and read what arrived.
``AlertmanagerServer`` runs the binary on a free port with clustering off.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from natsrouter.embedded import free_port
from tests.helpers.ready_process import start_until_ready, stop


class WebhookSink:
    def __init__(self) -> None:
        self.port = free_port()
        self._received: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self._received.append((time.time(), request.path, body))
        return web.json_response({"status": "ok"})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def received(self, path: str, before: float | None = None) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to ``path`` (before the Unix time ``before``), oldest first."""
        limit = float("inf") if before is None else before
        with self._lock:
            return [body for at, got, body in self._received if got == path and at < limit]


class AlertmanagerServer:
    def __init__(self, binary: str, tmp: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.tmp = tmp
        self.port = free_port()
        self.config = tmp / "alertmanager.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = tmp / "alertmanager.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout_s: float = 30) -> None:
        argv = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.tmp / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",  # one instance: no gossip port
            "--log.level=warn",
        ]
        self._proc = start_until_ready(
            "alertmanager", argv, self.log, f"{self.url}/-/ready", timeout_s
        )

    def stop(self) -> None:
        stop(self._proc)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Alertmanager holds, with ``status.state`` (active or suppressed) and
        ``status.inhibitedBy``."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=10) as resp:
            found: list[dict[str, Any]] = json.loads(resp.read())
        return found
