"""A TCP server that accepts and drops: at once, or just after the NATS handshake.

It stands for a load balancer with no healthy backend, or a server that crashes on each new
client: the two ways a reconnect can "succeed" at the TCP level and still fail. With
``handshake=True`` it answers INFO and the client's first PING, so the client believes it is
connected, then closes.
"""

from __future__ import annotations

import asyncio
import contextlib

from natsrouter.embedded import free_port

_INFO = (
    b'INFO {"server_id":"dropper","server_name":"dropper","version":"2.10.0","proto":1,'
    b'"go":"go1","host":"127.0.0.1","port":0,"headers":true,"max_payload":1048576}\r\n'
)


class DroppingServer:
    def __init__(self, *, handshake: bool) -> None:
        self.handshake = handshake
        self.port = free_port()
        self.accepted = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        with contextlib.suppress(ConnectionError, OSError):
            if self.handshake:
                writer.write(_INFO)
                await writer.drain()
                seen = b""
                while b"PING\r\n" not in seen:
                    chunk = await asyncio.wait_for(reader.read(4096), 5)
                    if not chunk:
                        break
                    seen += chunk
                writer.write(b"PONG\r\n")
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
