"""A small fake worker: reads ExecAssignments from JetStream, publishes acks and results.

Plain nats-py (the other side of the wire, not the link), so the tests see what a real
worker would.
"""

from __future__ import annotations

import json
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig


class FakeWorker:
    def __init__(self, nc: Client, assign_subject: str, ack_subject: str, result_subject: str):
        self.nc = nc
        self.js = nc.jetstream()
        self.assign_subject = assign_subject
        self.ack_subject = ack_subject
        self.result_subject = result_subject
        self._sub: Any = None

    @classmethod
    async def connect(
        cls,
        url: str,
        assign_subject: str = "caf.exec.assign.v1",
        ack_subject: str = "caf.exec.assign.v1.ack",
        result_subject: str = "caf.exec.result.v1",
    ) -> FakeWorker:
        return cls(await nats.connect(url), assign_subject, ack_subject, result_subject)

    async def assignments(
        self, count: int, timeout_s: float = 5.0
    ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """The next ``count`` assignments (document, headers), acked to their stream."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                self.assign_subject,
                durable="fake-worker",
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
            )
        out: list[tuple[dict[str, Any], dict[str, str]]] = []
        while len(out) < count:
            for msg in await self._sub.fetch(count - len(out), timeout=timeout_s):
                out.append((json.loads(msg.data), dict(msg.headers or {})))
                await msg.ack()
        return out

    async def ack(self, assignment: dict[str, Any], status: str = "accepted", **extra: Any) -> None:
        body = {
            "assignment_id": assignment["assignment_id"],
            "status": status,
            "message": "",
            "tenant_id": assignment["tenant_id"],
            **extra,
        }
        await self.js.publish(self.ack_subject, json.dumps(body).encode())

    async def result(
        self, assignment: dict[str, Any], status: str = "success", **extra: Any
    ) -> None:
        body = result_for(assignment, status, **extra)
        await self.js.publish(self.result_subject, json.dumps(body).encode())

    async def publish_raw(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        await self.js.publish(subject, data, headers=headers)

    async def close(self) -> None:
        await self.nc.close()


def result_for(assignment: dict[str, Any], status: str = "success", **extra: Any) -> dict[str, Any]:
    return {
        "assignment_id": assignment["assignment_id"],
        "request_id": assignment["request_id"],
        "status": status,
        "provider_id": assignment["executor"]["provider_id"],
        "job": {"type": assignment["job"]["type"]},
        "latency_ms": 120,
        "cost": 0.01,
        "trace_id": assignment["correlation"]["trace_id"],
        "tenant_id": assignment["tenant_id"],
        "timestamp": 1_700_000_000_000,
        **extra,
    }
