"""JetStream plumbing for bench/hostile_input.py: the worker's side of the streams.

A plain nats-py client (the other side of the wire, never the Router's link): wait for the
Router's consumers to finish, publish with every JetStream directive header, read a stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats

from hostile_cases import RESULTS


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def drained(js: Any) -> bool:
    """Both worker consumers have nothing pending and nothing unacknowledged."""
    for stream, durable in (("ROUTER_RESULTS", "router-results"), ("ROUTER_ACKS", "router-acks")):
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def stream_last(js: Any, stream: str) -> tuple[int, str | None]:
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not last:
        return 0, None
    headers = (await js.get_msg(stream, last)).headers or {}
    return last, headers.get("Nats-Msg-Id")


async def allow_directives(js: Any) -> None:
    """Let the worker streams take rollup and TTL headers, so a worker can send every one."""
    for stream in ("ROUTER_RESULTS", "ROUTER_ACKS"):
        config = (await js.stream_info(stream)).config
        config.allow_rollup_hdrs = True
        config.allow_msg_ttl = True
        await js.update_stream(config)


async def directive_publish(js: Any, subject: str, body: bytes, n: int) -> int:
    """Publish with every JetStream directive, each satisfied for the stream as it is now."""
    stream = "ROUTER_RESULTS" if subject == RESULTS else "ROUTER_ACKS"
    await until(lambda: drained(js), "the consumers to finish", 30)
    last, last_id = await stream_last(js, stream)
    headers = {
        "Nats-Expected-Stream": stream,
        "Nats-Expected-Last-Sequence": str(last),
        "Nats-Expected-Last-Subject-Sequence": str(last),
        "Nats-TTL": "1h",
        "Nats-Rollup": "sub",
        "Nats-Msg-Id": f"worker-directive-{n}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    if last_id is not None:
        headers["Nats-Expected-Last-Msg-Id"] = last_id
    ack = await js.publish(subject, body, headers=headers)
    return int(ack.seq)


async def read_stream(js: Any, stream: str) -> list[tuple[int, bytes, dict[str, str]]]:
    info = await js.stream_info(stream)
    out = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:  # a rolled-up or deleted sequence
                continue
            # nats-py parses stored headers as e-mail headers: a value that is not ASCII
            # comes back as an email.header.Header, whose str() is the text.
            headers = {k: str(v) for k, v in (msg.headers or {}).items()}
            out.append((seq, msg.data or b"", headers))
    return out
