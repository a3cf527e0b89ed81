"""Benchmark: CPU per message from nats-py's parser to a handler, ordinary and direct.

    .venv/bin/python bench/direct_delivery_cpu.py

A core subscription's message goes through nats-py's ``_process_msg`` (a ``Msg``, the pending
limits, the subscription's queue), its task and the coroutine the transport hands it; a
direct subscription's goes from ``OrderedClient._process_msg`` straight to a plain function.
This connects one transport connection to a nats-server it starts, subscribes both ways and
feeds the client's own parser ``MSG`` frames (128 B payload, a reply subject, 100 per read,
with and without one header) until the handler has them all: CPU time per message, best of 7
loops of 20,000. The parser's own work is in both figures; the difference is the delivery.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from natsrouter.embedded import NatsServer
from natsrouter.link.nats_transport import ConnectOptions, NatsTransport
from natsrouter.link.transport import InboundMessage

MESSAGES = 20_000
PER_READ = 100
LOOPS = 7


def frame(subject: bytes, sid: int, headers: bool) -> bytes:
    payload = b"x" * 128
    if not headers:
        return b"MSG %s %d _INBOX.a.1 %d\r\n%s\r\n" % (subject, sid, len(payload), payload)
    block = b"NATS/1.0\r\nK: v\r\n\r\n"
    size = len(block) + len(payload)
    return b"HMSG %s %d _INBOX.a.1 %d %d\r\n%s%s\r\n" % (
        subject,
        sid,
        len(block),
        size,
        block,
        payload,
    )


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    server = NatsServer(store_dir=tmp / "js", log_file=tmp / "nats.log")
    server.start()
    try:
        transport = NatsTransport(ConnectOptions(connect_timeout_s=2))
        conn = await transport.connect(server.url, lambda _conn, _err: None)
        client = conn._nc
        got = 0
        all_in = asyncio.Event()

        def plain(_msg: InboundMessage) -> None:
            nonlocal got
            got += 1
            if got == MESSAGES:
                all_in.set()

        async def coroutine(msg: InboundMessage) -> None:
            plain(msg)

        await conn.subscribe("bench.ordinary", None, coroutine, lambda _exc: None)
        sids = {"ordinary": client._sid}
        await conn.subscribe("bench.direct", None, plain, lambda _exc: None, direct=True)
        sids["direct"] = client._sid
        for name, sid in sids.items():
            for headers in (False, True):
                read = frame(f"bench.{name}".encode(), sid, headers) * PER_READ
                best = float("inf")
                for _ in range(LOOPS):
                    got = 0
                    all_in.clear()
                    started = time.process_time()
                    for _ in range(MESSAGES // PER_READ):
                        await client._ps.parse(read)
                        await asyncio.sleep(0)
                    await all_in.wait()
                    best = min(best, time.process_time() - started)
                label = f"{name}, {'1 header' if headers else 'no headers'}"
                print(f"{label:24} {best / MESSAGES * 1e6:5.2f} µs per message")
        await conn.close()
    finally:
        server.kill()


if __name__ == "__main__":
    asyncio.run(main())
