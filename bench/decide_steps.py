"""Benchmark: the Router's own CPU per decide, step by step, in process (no NATS).

    .venv/bin/python bench/decide_steps.py [--requests N] [--repeat R]

Builds a ``DecideService`` as ``bench/decide_gc.py`` does (one weighted policy, heap frozen
as ``natsrouter run`` freezes it) and times, best of ``--repeat``, per request:

- ``start+encoded+count``: what the NATS intake does for a decide without a push, each
  request distinct (the idempotency memory grows), and the same once the memory is full
  (every answer remembered pushes the oldest out: the steady state of a busy Router);
- ``parse``, ``Decider.decide``, ``DecideMemory.remember_new``, ``Answer.encoded`` and
  ``DecideService.count`` alone.

The figures are CPU-bound loops on a shared machine: compare two versions in one run, or
with ``bench/decide_versions.py`` (docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.observability.metrics import RouterMetrics
from natsrouter.routing.decider import Decider
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.messages import parse_decide_request
from natsrouter.routing.policy import PolicyStore
from natsrouter.service.answers import Answer
from natsrouter.service.assignments import AssignmentPusher
from natsrouter.service.decide import DecideService
from natsrouter.service.events import RouterEvents

MAX_PAYLOAD = 1 << 20
#: Answers held when the memory is full in the steady-state measure.
FULL_AT = 10_000


def body(i: int) -> bytes:
    return json.dumps(
        {
            "version": "1",
            "request_id": f"bench-{i:07d}",
            "tenant_id": "bench",
            "trace_id": "0123456789abcdef0123456789abcdef",
            "task": {"type": "text", "payload": {"prompt": "hello"}},
        }
    ).encode()


def service() -> DecideService:
    root = Path(tempfile.mkdtemp())
    (root / "bench").mkdir()
    (root / "bench" / "default.json").write_text(
        json.dumps({"providers": [{"name": "a", "weight": 60}, {"name": "b", "weight": 40}]})
    )
    store = PolicyStore(root)
    store.reload()
    # No request pushes, so the assignment pusher is never called.
    pusher: AssignmentPusher = AssignmentPusher.__new__(AssignmentPusher)
    return DecideService(
        build_settings({"policies_path": str(root)}),
        Decider(store, ProviderHealth()),
        pusher,
        RouterEvents(RouterMetrics(CollectorRegistry())),
    )


def timed(loop: Callable[[], None], requests: int) -> float:
    """µs per request of one run of ``loop``, the heap frozen before it."""
    gc.collect()
    gc.freeze()
    try:
        started = time.perf_counter()
        loop()
        return (time.perf_counter() - started) / requests * 1e6
    finally:
        gc.unfreeze()


def measures(requests: int) -> dict[str, Callable[[], float]]:
    def whole(full_at: int | None) -> Callable[[], float]:
        def run() -> float:
            decide = service()
            if full_at is not None:
                decide._memory._cache.max_entries = full_at
            raws = [body(i) for i in range(requests)]

            def loop() -> None:
                for raw in raws:
                    answer = decide.start(raw, None, "nats")
                    assert isinstance(answer, Answer)
                    answer.encoded()
                    decide.count(answer, "nats")

            return timed(loop, requests)

        return run

    raw = body(1)
    decide = service()
    request = parse_decide_request(raw, MAX_PAYLOAD)
    decision = decide._decider.decide(request)
    answer = decide.start(body(2), None, "nats")
    assert isinstance(answer, Answer)

    def parse() -> float:
        return timed(
            lambda: [parse_decide_request(raw, MAX_PAYLOAD) for _ in range(requests)], requests
        )

    def decider() -> float:
        return timed(lambda: [decide._decider.decide(request) for _ in range(requests)], requests)

    def remember() -> float:
        memory = service()._memory
        parsed = [parse_decide_request(body(i), MAX_PAYLOAD) for i in range(requests)]
        keys = [(r.tenant_id, r.request_id) for r in parsed]

        def loop() -> None:
            for key, one in zip(keys, parsed, strict=True):
                memory.remember_new(key, one, decision, len(raw))

        return timed(loop, requests)

    def encoded() -> float:
        return timed(lambda: [answer.encoded() for _ in range(requests)], requests)

    def count() -> float:
        return timed(lambda: [decide.count(answer, "nats") for _ in range(requests)], requests)

    return {
        "start+encoded+count": whole(None),
        f"  the same, memory full ({FULL_AT:,})": whole(FULL_AT),
        "parse_decide_request": parse,
        "Decider.decide": decider,
        "DecideMemory.remember_new": remember,
        "Answer.encoded": encoded,
        "DecideService.count": count,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    for name, measure in measures(args.requests).items():
        best = min(measure() for _ in range(args.repeat))
        print(f"{name:36s} {best:6.2f} µs")


if __name__ == "__main__":
    main()
