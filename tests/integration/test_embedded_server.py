"""The embedded nats-server is the Router's own: refused when the port is another's, restarted
on its store when it dies (nothing accepted is lost), and gone with the Router on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from natsrouter.embedded import PID_FILE_NAME, EmbeddedServerError, NatsServer, free_port
from tests.chaos.conftest import ROUTER_ENV
from tests.chaos.harness import DecideLoad, decide_keys, read_stream, reconcile, settle
from tests.helpers.process import RouterProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            children = router.nats_children  # a SIGKILLed Router cannot stop its child
            router.kill()
            for pid in children:
                _kill(pid)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def embedded_env(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        **ROUTER_ENV,
        "ROUTER_EMBEDDED_NATS_PORT": str(port),
        "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp / "store"),
        **extra,
    }


def test_port_held_by_another_server_exits_4_naming_the_port(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Another nats-server on the embedded port: exit 4, the error names the port."""
    stranger = NatsServer(store_dir=tmp_path / "stranger")
    stranger.start()
    try:
        router = RouterProcess(embedded_env(tmp_path, stranger.port), tmp_path)
        routers.append(router)
        assert router.proc is not None
        assert router.proc.wait(timeout=30) == 4
        assert stranger.running
    finally:
        stranger.kill()
    failed = [line for line in router.lines() if line["message"].startswith("embedded nats")]
    assert [line["message"] for line in failed] == ["embedded nats-server did not start"]
    assert f"port 127.0.0.1:{stranger.port} is taken by another nats-server" in failed[0]["error"]
    assert failed[0]["port"] == stranger.port


def test_start_refuses_a_port_that_answers_as_another_server(tmp_path: Path) -> None:
    """NatsServer.start on a port another nats-server holds raises, naming the port."""
    stranger = NatsServer(store_dir=tmp_path / "stranger")
    stranger.start()
    try:
        ours = NatsServer(port=stranger.port, store_dir=tmp_path / "ours")
        with pytest.raises(EmbeddedServerError, match=f"port 127.0.0.1:{stranger.port} is taken"):
            ours.start()
        assert not ours.running
    finally:
        stranger.kill()


async def test_killed_embedded_server_is_restarted_and_nothing_accepted_is_lost(
    tmp_path: Path, routers: list[RouterProcess], http: aiohttp.ClientSession
) -> None:
    """SIGKILL the embedded server under decide load: restarted once on its store, every
    accepted assignment stored once; SIGTERM then leaves no nats-server behind."""
    port = free_port()
    router = RouterProcess(embedded_env(tmp_path, port), tmp_path)
    routers.append(router)
    await settle(("the Router to be ready", router.ready), timeout_s=30)
    [first] = router.nats_children
    load = DecideLoad(rate=50, router=router, session=http)
    load.start()
    await settle(("some sent", lambda: len(load.records) >= 50))
    _kill(first)
    await settle(
        ("the restart", lambda: router.metric("router_embedded_nats_restarts_total") == 1),
        ("ready again", router.ready),
    )
    restarted_at = time.monotonic()
    await settle(("a sent after the restart", lambda: load.first_sent_after(restarted_at)))
    await load.stop()
    await settle(("the queue to drain", lambda: router.status()["pending"]["count"] == 0))
    stored = decide_keys(await read_stream(f"nats://127.0.0.1:{port}", "ROUTER_ASSIGNMENTS"))
    books = reconcile(load.records, stored)
    assert load.errors == []
    assert (books.lost, books.duplicated, books.phantom, books.refused) == (0, 0, 0, {})
    assert books.accepted == len(load.records)
    assert books.during_outage > 0, "no assignment was queued while the server was down"
    assert books.delivered_after == books.during_outage
    [second] = router.nats_children
    assert second != first
    codes = router.codes()
    assert codes.count("ROUTER_EMBEDDED_NATS_EXITED") == 1
    assert codes.count("ROUTER_EMBEDDED_NATS_RESTARTED") == 1
    assert await asyncio.to_thread(router.stop) == 0
    assert not _exists(second)
    assert router.nats_children == []


def test_sigterm_stops_the_embedded_server(tmp_path: Path, routers: list[RouterProcess]) -> None:
    """After SIGTERM the Router's nats-server child is gone and the port is free."""
    port = free_port()
    router = RouterProcess(embedded_env(tmp_path, port), tmp_path)
    routers.append(router)
    router.wait(router.ready, what="ready")
    [child] = router.nats_children
    assert router.stop() == 0
    assert not _exists(child)
    probe = NatsServer(port=port, store_dir=tmp_path / "probe")
    probe.start()  # the port is ours to take again
    probe.kill()


async def test_restart_waits_while_another_server_holds_the_port(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """A stranger takes the port after the crash: restart fails (logged), then succeeds."""
    port = free_port()
    slow = {"ROUTER_NATS_RECONNECT_DELAY_MS": "1500", "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "1500"}
    router = RouterProcess(embedded_env(tmp_path, port, **slow), tmp_path)
    routers.append(router)
    await settle(("the Router to be ready", router.ready), timeout_s=30)
    [first] = router.nats_children
    _kill(first)
    stranger = NatsServer(port=port, store_dir=tmp_path / "stranger")
    await stranger.astart()  # within the first backoff delay (1.2 s at least)
    try:
        await settle(
            (
                "a failed restart",
                lambda: "ROUTER_EMBEDDED_NATS_RESTART_FAILED" in router.codes(),
            )
        )
    finally:
        stranger.kill()
    await settle(
        ("the restart", lambda: router.metric("router_embedded_nats_restarts_total") == 1),
        ("ready again", router.ready),
    )
    [failed] = [
        line
        for line in router.lines()
        if line.get("error_code") == "ROUTER_EMBEDDED_NATS_RESTART_FAILED"
    ][:1]
    assert f"port 127.0.0.1:{port} is taken by another nats-server" in failed["error"]
    assert len(router.nats_children) == 1
    assert router.codes().count("ROUTER_EMBEDDED_NATS_RESTARTED") == 1


def test_start_names_the_port_another_program_holds(tmp_path: Path) -> None:
    """A port held by something that is not nats-server: the error names the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ours = NatsServer(port=port, store_dir=tmp_path / "ours")
        with pytest.raises(EmbeddedServerError, match=f"on port 127.0.0.1:{port} exited with 1"):
            ours.start()
        assert not ours.running


async def test_a_router_killed_with_sigkill_stops_its_orphan_on_the_next_start(
    tmp_path: Path, routers: list[RouterProcess], http: aiohttp.ClientSession
) -> None:
    """SIGKILL the Router with assignments queued, and a server of its store outlives it (as
    where the kernel does not stop it): a new Router on the same directory stops that orphan,
    starts its own, replays the queue, and one nats-server is left."""
    port = free_port()
    env = embedded_env(tmp_path, port)
    store = tmp_path / "store"
    first = RouterProcess(env, tmp_path)
    routers.append(first)
    await settle(("the Router to be ready", first.ready), timeout_s=30)
    [child] = first.nats_children
    os.kill(child, signal.SIGSTOP)  # frozen: the Router queues what it accepts
    load = DecideLoad(rate=20, router=first, session=http)
    load.start()
    await settle(("assignments queued", lambda: first.status()["pending"]["count"] >= 5))
    await load.stop()
    first.kill()
    _kill(child)  # gone with the Router on Linux (parent-death signal); made sure here
    await settle(("the first server gone", lambda: not _exists(child)))
    # The orphan: a server on the Router's port and store, named in its pid file.
    orphan = NatsServer(port=port, store_dir=store, pid_file=store / PID_FILE_NAME)
    await orphan.astart()
    try:
        second = RouterProcess(env, tmp_path)
        routers.append(second)
        await settle(("the second Router to be ready", second.ready), timeout_s=30)
        await settle(("the queue to drain", lambda: second.status()["pending"]["count"] == 0))
        assert not orphan.running
    finally:
        orphan.kill()
    assert second.alive
    stored = decide_keys(await read_stream(f"nats://127.0.0.1:{port}", "ROUTER_ASSIGNMENTS"))
    books = reconcile(load.records, stored)
    assert load.errors == []
    assert books.during_outage >= 5
    assert (books.lost, books.duplicated, books.phantom) == (0, 0, 0)
    assert len(second.nats_children) == 1
    [stopped] = [
        line
        for line in second.lines()
        if line.get("error_code") == "ROUTER_EMBEDDED_NATS_ORPHAN_STOPPED"
    ]
    assert stopped["server"] == f"nats://127.0.0.1:{port}"
    assert stopped["server_name"] == orphan.name


def test_a_pid_file_naming_a_stranger_leaves_it_alone(tmp_path: Path) -> None:
    """The pid file names a process that now answers with another name: it is not stopped,
    and the start fails naming the port."""
    stranger = NatsServer(store_dir=tmp_path / "stranger")
    stranger.start()
    try:
        assert stranger.pid is not None
        pid_file = tmp_path / "ours" / PID_FILE_NAME
        pid_file.parent.mkdir()
        pid_file.write_text(
            json.dumps(
                {"pid": stranger.pid, "server_name": "natsrouter-old", "port": stranger.port}
            )
        )
        ours = NatsServer(port=stranger.port, store_dir=tmp_path / "ours", pid_file=pid_file)
        with pytest.raises(EmbeddedServerError, match=f"port 127.0.0.1:{stranger.port} is taken"):
            ours.start()
        assert stranger.running
    finally:
        stranger.kill()


def test_the_server_of_a_live_router_is_not_taken_for_an_orphan(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """A second start on the store of a Router still running: that Router's server is left
    alone, and the start fails naming the port."""
    port = free_port()
    router = RouterProcess(embedded_env(tmp_path, port), tmp_path)
    routers.append(router)
    router.wait(router.ready, what="ready")
    [child] = router.nats_children
    store = tmp_path / "store"
    ours = NatsServer(port=port, store_dir=store, pid_file=store / PID_FILE_NAME)
    with pytest.raises(EmbeddedServerError, match=f"port 127.0.0.1:{port} is taken"):
        ours.start()
    assert _exists(child)
    assert router.nats_children == [child]
