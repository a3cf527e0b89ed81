"""Memory under hostile keys: a million distinct, long session ids and request ids.

    .venv/bin/python bench/hostile_keys.py [--count N]

A client chooses how many keys the Router's per-key memories see and how long each is. This
sends ``--count`` (default 1,000,000) decides through a real Decider whose policy is sticky,
each with a distinct 256-character ``session_id`` (the longest that is sticky), then
remembers as many decide answers (``DecideMemory``, 256-character request ids) and as many
processed result keys (``IdempotencyWindow``). After each phase it prints the process's
resident set size (``VmRSS``) and its growth, the entries kept and the estimated bytes, so
the bound in bytes (not only in entries) shows; every memory is kept alive to the end. No
NATS involved: this measures the memories alone.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import tempfile
import time
from pathlib import Path

from natsrouter.routing.decider import Decider, Decision, DecisionReason
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.messages import parse_decide_request
from natsrouter.routing.policy import PolicyStore
from natsrouter.service.idempotency import IdempotencyWindow
from natsrouter.service.remembered import DecideMemory, Remembered, asked


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def long_id(i: int) -> str:
    return f"{i:010d}" + "s" * 246  # 256 characters, each distinct


def report(phase: str, started: float, rss_before: float, kept: int, estimated: int) -> None:
    gc.collect()
    rss = rss_mib()
    print(
        f"{phase:<16} {time.perf_counter() - started:5.1f} s  RSS {rss:6.1f} MiB "
        f"(+{rss - rss_before:6.1f})  kept {kept:>9,}  estimated {estimated / 2**20:6.1f} MiB",
        flush=True,
    )


def sticky_phase(count: int) -> Decider:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "acme").mkdir()
        policy = {"providers": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}
        policy["sticky"] = {"enabled": True, "ttl_seconds": 3600}
        (root / "acme" / "default.json").write_text(json.dumps(policy))
        store = PolicyStore(root)
        store.reload()
        decider = Decider(store, ProviderHealth(), rng=random.Random(1))
        template = {"version": "1", "request_id": "r", "tenant_id": "acme"}
        template["task"] = {"type": "t", "payload": {}}
        base = parse_decide_request(json.dumps(template).encode(), 1 << 20)
        before, started = rss_mib(), time.perf_counter()
        for i in range(count):
            request = base.__class__(**{**base.__dict__, "metadata": {"session_id": long_id(i)}})
            decider.decide(request)
        report("sticky sessions", started, before, len(decider.sticky), decider.sticky.bytes)
        return decider


async def decide_memory_phase(count: int) -> DecideMemory:
    memory = DecideMemory(3600)
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, None)
    before, started = rss_mib(), time.perf_counter()
    for i in range(count):
        # Each entry keeps its own parsed request (what a repeat is compared with).
        document = {"version": "1", "request_id": long_id(i), "tenant_id": "acme"}
        document["task"] = {"type": "t", "payload": {"prompt": "hello"}}
        raw = json.dumps(document).encode()
        request = parse_decide_request(raw, 1 << 20)
        key = (request.tenant_id, request.request_id)
        memory.begin(key)
        memory.remember(key, Remembered(asked(request), decision, len(raw)))
        memory.end(key)
    cache = memory._cache
    report("decide memory", started, before, len(cache), cache.bytes)
    return memory


def idempotency_phase(count: int) -> IdempotencyWindow:
    window = IdempotencyWindow(3600)
    before, started = rss_mib(), time.perf_counter()
    for i in range(count):
        window.record(f"result\x1facme\x1f{long_id(i)}")
    report("ack/result keys", started, before, len(window), window._seen.bytes)
    return window


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"{args.count:,} distinct 256-character keys per memory; start RSS {rss_mib():.1f} MiB")
    # Each memory stays alive, so the RSS only grows and each phase's growth is its own.
    kept = [
        sticky_phase(args.count),
        asyncio.run(decide_memory_phase(args.count)),
        idempotency_phase(args.count),
    ]
    print(f"final RSS {rss_mib():.1f} MiB with all {len(kept)} memories full")


if __name__ == "__main__":
    main()
