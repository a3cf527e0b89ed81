"""Benchmark: decide over NATS beside a raw nats-py echo responder; same server, one run.

    .venv/bin/python bench/decide_vs_raw.py [--requests N] [--rounds R]

The responder runs in its own process (raw: a nats-py queue subscriber that answers every
request with a fixed DecideResponse-sized body; natsrouter: `natsrouter run` on the same
server, logging at warning). This process sends requests with nats-py at 1, 10 and 100 in
flight and reports requests/s and p50/p99 latency of each, and the ratio router/raw. Each
figure is the median of --rounds runs, raw and router alternating. No assignment is pushed
(decide only); `--push` adds push_assignment to measure decide + JetStream PubAck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from natsrouter.embedded import NatsServer, free_port

SUBJECT = "beamline.router.v1.decide"
RAW_RESPONDER = """
import asyncio, sys, nats
BODY = b'{"ok":true,"decision":{"provider_id":"a","priority":0,"expected_latency_ms":null,' \\
       b'"expected_cost":null,"reason":"weighted","policy_id":"default","fallback_used":false},' \\
       b'"context":{"request_id":"bench-000000","trace_id":"0123456789abcdef0123456789abcdef"}}'
async def main():
    nc = await nats.connect(sys.argv[1])
    async def answer(msg):
        await nc.publish(msg.reply, BODY)
    await nc.subscribe(sys.argv[2], queue="raw", cb=answer)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def request_body(i: int, push: bool) -> bytes:
    return json.dumps(
        {
            "version": "1",
            "request_id": f"bench-{i:06d}",
            "tenant_id": "bench",
            "trace_id": "0123456789abcdef0123456789abcdef",
            "task": {"type": "text", "payload": {"prompt": "hello"}},
            "push_assignment": push,
        }
    ).encode()


def start_raw(url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_RESPONDER, url, SUBJECT], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("raw responder did not start")
    return proc


def start_router(url: str, tmp: Path) -> subprocess.Popen[bytes]:
    policy = tmp / "policies" / "bench" / "default.json"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(
        json.dumps({"providers": [{"name": "a", "weight": 60}, {"name": "b", "weight": 40}]})
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")},
        "ROUTER_NATS_URL": url,
        "ROUTER_POLICIES_PATH": str(policy.parents[1]),
        "ROUTER_METRICS_HOST": "127.0.0.1",
        "ROUTER_METRICS_PORT": str(free_port()),
        "ROUTER_HTTP_PORT": str(free_port()),
        "ROUTER_LOG_LEVEL": "error",
    }
    natsrouter = str(Path(sys.executable).parent / "natsrouter")
    return subprocess.Popen([natsrouter, "run"], env=env, stderr=subprocess.DEVNULL)


async def wait_answering(url: str, push: bool) -> None:
    nc = await nats.connect(url)
    try:
        for _ in range(200):
            try:
                await nc.request(SUBJECT, request_body(0, push), timeout=0.5)
                return
            except Exception:
                await asyncio.sleep(0.05)
        raise RuntimeError("responder never answered")
    finally:
        await nc.close()


async def load(url: str, total: int, in_flight: int, push: bool) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) for ``total`` requests with ``in_flight`` outstanding."""
    nc = await nats.connect(url)
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            reply = await nc.request(SUBJECT, request_body(i, push), timeout=10)
            latencies.append(time.perf_counter() - started)
            if not reply.data.startswith(b'{"ok":true'):
                raise RuntimeError(f"unexpected answer: {reply.data[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    await nc.close()
    latencies.sort()
    return (
        total / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99) - 1] * 1000,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--push", action="store_true", help="decide with push_assignment")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(store_dir=tmp / "js")
        server.start()
        try:
            print(
                f"{'in flight':>9} | {'raw req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
                f"{'router req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | ratio"
            )
            for in_flight in (1, 10, 100):
                figures: dict[str, list[tuple[float, float, float]]] = {"raw": [], "router": []}
                total = args.requests if in_flight > 1 else max(1000, args.requests // 5)
                for _ in range(args.rounds):
                    for kind in ("raw", "router"):
                        proc = (
                            start_raw(server.url)
                            if kind == "raw"
                            else start_router(server.url, tmp)
                        )
                        try:
                            await wait_answering(server.url, args.push and kind == "router")
                            push = args.push and kind == "router"
                            figures[kind].append(await load(server.url, total, in_flight, push))
                        finally:
                            proc.terminate()
                            proc.wait(timeout=30)
                raw = [statistics.median(col) for col in zip(*figures["raw"], strict=True)]
                router = [statistics.median(col) for col in zip(*figures["router"], strict=True)]
                print(
                    f"{in_flight:>9} | {raw[0]:>10,.0f} {raw[1]:>7.2f} {raw[2]:>7.2f} | "
                    f"{router[0]:>12,.0f} {router[1]:>7.2f} {router[2]:>7.2f} | "
                    f"{router[0] / raw[0]:.2f}"
                )
        finally:
            server.kill()


if __name__ == "__main__":
    asyncio.run(main())
