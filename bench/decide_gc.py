"""Benchmark: what CPython's garbage collector costs a Router whose idempotency memory grows.

    .venv/bin/python bench/decide_gc.py [--requests N] [--no-freeze]

Answers N distinct decide requests in process (``DecideService.start``, no NATS: parse,
decide, remember, encode, count) and reports the time per request and, from ``gc.callbacks``,
the time spent in collections of each generation and the longest pause. Every remembered
answer holds objects the collector tracks, and a full collection walks all of them, so its
pauses grow with the memory (docs/performance.md). Like ``natsrouter run``, it freezes the
heap once the service is built (``cli.freeze_startup_heap``) unless ``--no-freeze``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from decide_steps import body
from decide_steps import service as decide_service
from natsrouter.cli import freeze_startup_heap
from natsrouter.routing.strict_json import dumps
from natsrouter.service.answers import Answer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the heap as it is (natsrouter run freezes it once started)",
    )
    args = parser.parse_args()
    service = decide_service()  # built as bench/decide_steps.py builds it
    raws = [body(i) for i in range(args.requests)]
    if not args.no_freeze:
        freeze_startup_heap()  # as natsrouter run does once the Router has started
    pauses: list[tuple[int, float]] = []
    began: list[float] = [0.0]

    def watch(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - began[0]))

    gc.callbacks.append(watch)
    started = time.perf_counter()
    for raw in raws:
        answer = service.start(raw, None, "nats")
        assert isinstance(answer, Answer) and answer.outcome == "ok", answer
        dumps(answer.body)
        service.count(answer, "nats")
    elapsed = time.perf_counter() - started
    gc.callbacks.remove(watch)
    print(
        f"{args.requests} decides in {elapsed:.2f} s: {elapsed / args.requests * 1e6:.1f} µs each"
    )
    for generation in (0, 1, 2):
        times = [p for g, p in pauses if g == generation]
        if times:
            print(
                f"generation {generation}: {len(times)} collections, "
                f"{sum(times) * 1000:.0f} ms in all ({sum(times) / elapsed:.0%}), "
                f"longest {max(times) * 1000:.1f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
