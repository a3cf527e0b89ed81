"""A TCP proxy for tests: forwards, black-holes (keeps sockets open, forwards nothing) or cuts.

It stands between the link and a real nats-server to make the failures a process kill cannot:
a half-open link (``blackhole``), lost answers (``blackhole_replies``: the server gets and
acts on what the client sends, the client hears nothing back), late answers (``hold_replies``:
kept until ``resume``, then delivered in order) and an abrupt reset of every
connection (``cut``). It also keeps what clients sent (``sent``), in the order the server read
it: the wire order of protocol commands is otherwise invisible.
"""

from __future__ import annotations

import asyncio
import contextlib

from natsrouter.embedded import free_port


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port or free_port()
        self.blackholed = False
        self.replies_blackholed = False
        self.connections = 0
        #: Every byte clients sent, in order (all connections together).
        self.sent = bytearray()
        self._replies_flow = asyncio.Event()
        self._replies_flow.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        for src, dst, replies in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pipe(src, dst, replies=replies))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, replies: bool
    ) -> None:
        try:
            while data := await src.read(65536):
                if self.blackholed or (replies and self.replies_blackholed):
                    continue  # read and discard: the peer sees an open, silent socket
                if not replies:
                    self.sent += data
                else:
                    await self._replies_flow.wait()
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not self.blackholed:
                dst.close()

    def blackhole(self) -> None:
        self.blackholed = True

    def blackhole_replies(self) -> None:
        """Discard server-to-client bytes only: requests arrive, answers are lost."""
        self.replies_blackholed = True

    def hold_replies(self) -> None:
        """Keep server-to-client bytes until ``resume``: answers arrive late, not lost."""
        self._replies_flow.clear()

    def resume(self) -> None:
        self.blackholed = False
        self.replies_blackholed = False
        self._replies_flow.set()

    async def cut(self) -> None:
        """Reset every open connection (new ones are still accepted)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self.cut()
        for task in list(self._pipes):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._pipes, return_exceptions=True)
