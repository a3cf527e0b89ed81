"""Benchmark: CPU per decide answered at once through the NATS intake's handler, in process.

    .venv/bin/python bench/decide_intake_cpu.py [--requests N] [--repeat R]

Builds a ``DecideService`` as ``bench/decide_steps.py`` does, with the ``$SRV.STATS`` counts
observing it as in a Router, and hands ``NatsDecideIntake._on_message`` distinct requests
with a reply inbox, with a ``trace_id`` and without one (the Router makes it); the link is
a stand-in whose ``reply_now`` answers ``SENT`` (no NATS): the figure is the intake's glue,
the parse, the decider and the memory, best of ``--repeat`` loops, µs per request.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

from decide_steps import body, service
from natsrouter.config import build_settings
from natsrouter.link.sender import SENT
from natsrouter.link.transport import InboundMessage
from natsrouter.service.decide_intakes import NatsDecideIntake
from natsrouter.service.nats_service import EndpointCounts


class _Link:
    """Replies sent at once, as the link's ``reply_now`` does on an open connection."""

    def reply_now(self, subject: str, payload: bytes, headers: Any = None) -> Any:
        return SENT


def once(requests: int, traced: bool) -> float:
    decide = service()
    decide.events.decide_observers.append(EndpointCounts().record)
    intake = NatsDecideIntake(_Link(), decide, build_settings({}))  # type: ignore[arg-type]
    raws = [body(i) for i in range(requests)]
    if not traced:
        untraced = [{k: v for k, v in json.loads(raw).items() if k != "trace_id"} for raw in raws]
        raws = [json.dumps(one).encode() for one in untraced]
    messages = [InboundMessage("router.decide", raw, None, "_INBOX.a.1") for raw in raws]
    handle = intake._on_message
    gc.collect()
    gc.freeze()
    try:
        started = time.process_time()
        for msg in messages:
            handle(msg)
        return (time.process_time() - started) / requests * 1e6
    finally:
        gc.unfreeze()
        assert decide.in_flight == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    for traced in (True, False):
        best = min(once(args.requests, traced) for _ in range(args.repeat))
        which = "with a trace_id" if traced else "without a trace_id"
        print(f"NatsDecideIntake._on_message, answered at once, {which}: {best:.2f} µs CPU")


if __name__ == "__main__":
    main()
