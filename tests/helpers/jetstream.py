"""Test-side JetStream set-up and inspection, with a plain nats-py client (never the link)."""

from __future__ import annotations

from dataclasses import dataclass

import nats
import nats.js.errors
from nats.js.api import StreamConfig


@dataclass(frozen=True)
class Stored:
    seq: int
    data: bytes
    headers: dict[str, str]


async def create_stream(
    url: str, name: str, subjects: list[str], duplicate_window_s: float = 120.0
) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name=name, subjects=subjects, duplicate_window=duplicate_window_s)
        )
    finally:
        await nc.close()


async def stored_messages(url: str, stream: str) -> list[Stored]:
    """Every message in the stream, by sequence."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            msg = await js.get_msg(stream, seq)
            out.append(Stored(seq, msg.data or b"", dict(msg.headers or {})))
        return out
    finally:
        await nc.close()


@dataclass(frozen=True)
class BucketFacts:
    ttl_s: float
    replicas: int
    history: int


async def bucket_facts(url: str, bucket: str) -> BucketFacts | None:
    """A key-value bucket's configuration as the server holds it, or None when missing."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(f"KV_{bucket}")
        except nats.js.errors.NotFoundError:
            return None
        config = info.config
        return BucketFacts(
            float(config.max_age or 0.0),
            int(config.num_replicas or 1),
            int(config.max_msgs_per_subject or 0),
        )
    finally:
        await nc.close()
