"""Benchmark: CPU time per call on the link's hot path, beside raw nats-py, in one process.

    .venv/bin/python bench/hot_path_cpu.py [--calls 100000] [--rounds 5]

Wall-clock rates move with whatever else the machine runs; CPU time spent by this process
per call moves much less, so this is the figure to judge a change of the hot path by. Each
line is the best of ``--rounds`` loops of ``--calls`` awaited calls (128 B payloads, a
running nats-server, logging at the production default):

- core publish: raw nats-py's ``Client.publish`` beside ``Link.publish`` and ``Link.reply``,
  without and with one header;
- JetStream publish, one at a time (a tenth of ``--calls``): raw nats-py's ``js.publish``
  with a ``Nats-Msg-Id`` beside ``Link.publish_with_ack`` (which always sends one);
- delivery: the callback nats-py awaits per message of a core subscription, to a handler
  that returns at once (``Msg`` made an ``InboundMessage``, the handler's failure guarded);
- one coroutine frame: awaiting a coroutine that returns at once, the unit the hot path is
  trimmed in (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from natsrouter.config import LogLevel, build_settings
from natsrouter.embedded import NatsServer
from natsrouter.link import Link
from natsrouter.link.nats_transport import _delivery
from natsrouter.link.transport import InboundMessage
from natsrouter.observability.logging import configure_logging
from natsrouter.observability.metrics import LinkMetrics

PAYLOAD = b"x" * 128
HEADERS = {"trace_id": "0af7651916cd43dd8448eb211c80319c"}


async def cpu_per_call(call: Callable[[], Awaitable[object]], calls: int) -> float:
    """CPU µs of this process per awaited ``call()``."""
    before = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - before) / calls * 1e6


async def measure(url: str, calls: int, rounds: int) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH", subjects=["bench.js"]))
    ids = itertools.count()
    link = Link(build_settings({"nats_url": url}), LinkMetrics(CollectorRegistry()))
    await link.start()
    assert await link.wait_connected(5)

    async def handler(_msg: InboundMessage) -> None:
        return None

    async def nothing() -> None:
        return None

    async def one_frame() -> None:
        await nothing()

    deliver = _delivery(handler, lambda _exc: None)
    msg = Msg(nc, subject="bench.core", reply="", data=PAYLOAD, headers=None)
    cases: dict[str, Callable[[], Awaitable[object]]] = {
        "raw nats-py publish": lambda: nc.publish("bench.core", PAYLOAD),
        "Link.publish": lambda: link.publish("bench.core", PAYLOAD),
        "Link.reply": lambda: link.reply("bench.core", PAYLOAD),
        "raw nats-py publish, 1 header": lambda: nc.publish("bench.core", PAYLOAD, headers=HEADERS),
        "Link.publish, 1 header": lambda: link.publish("bench.core", PAYLOAD, HEADERS),
        "raw nats-py js.publish, with id": lambda: js.publish(
            "bench.js", PAYLOAD, headers={"Nats-Msg-Id": f"r-{next(ids)}"}
        ),
        "Link.publish_with_ack": lambda: link.publish_with_ack("bench.js", PAYLOAD),
        "delivery to a handler": lambda: deliver(msg),
        "(one coroutine frame)": one_frame,
    }
    best = dict.fromkeys(cases, float("inf"))
    try:
        for _ in range(rounds):
            for name, call in cases.items():
                n = calls // 10 if "js" in name or "ack" in name else calls
                best[name] = min(best[name], await cpu_per_call(call, n))
                await asyncio.sleep(0.05)  # the flusher writes what the loop buffered
    finally:
        await link.close()
        await nc.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configure_logging(LogLevel.INFO)  # the production default
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(store_dir=Path(tmp) / "js", log_file=Path(tmp) / "nats.log")
        server.start()
        try:
            best = asyncio.run(measure(server.url, args.calls, args.rounds))
        finally:
            server.kill()
    print(f"CPU µs per call, best of {args.rounds} x {args.calls:,}")
    for name, micros in best.items():
        print(f"  {name:32s} {micros:6.2f}")


if __name__ == "__main__":
    main()
