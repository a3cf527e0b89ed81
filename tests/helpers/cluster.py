"""A three-node nats-server cluster with JetStream, on loopback, for R3 streams in tests.

Each node is an ``embedded.NatsServer`` with its own client port, route port, name and store,
routed to the other two. ``wait_ready`` waits until the JetStream meta group has a leader
(before that, JetStream API calls fail); a killed node can be started again on its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors

from natsrouter.embedded import NatsServer, free_port


class NatsCluster:
    def __init__(self, root: Path, size: int = 3, name: str = "chaos") -> None:
        route_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
        self.nodes = [
            NatsServer(
                store_dir=root / f"n{i}",
                log_file=root / f"n{i}.log",
                extra_args=(
                    "--server_name",
                    f"n{i}",
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://127.0.0.1:{route_ports[i]}",
                    "--routes",
                    routes,
                ),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node_for(self, url: str) -> NatsServer:
        [node] = [n for n in self.nodes if n.url == url]
        return node

    def start(self) -> None:
        for node in self.nodes:
            node.start(timeout_s=20)

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until every running node answers JetStream account info (a meta leader exists)."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if not node.running:
                continue
            while True:
                try:
                    nc = await nats.connect(node.url, connect_timeout=1, allow_reconnect=False)
                    try:
                        await nc.jetstream(timeout=1).account_info()
                        break
                    finally:
                        await nc.close()
                except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise AssertionError(
                            f"JetStream cluster not ready in {timeout_s}s"
                        ) from None
                    await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_cluster(root: Path, name: str = "chaos") -> AsyncIterator[NatsCluster]:
    """A started cluster with every node ready; killed on the way out."""
    nodes = NatsCluster(root, name=name)
    await asyncio.to_thread(nodes.start)
    try:
        await nodes.wait_ready()
        yield nodes
    finally:
        nodes.kill()
