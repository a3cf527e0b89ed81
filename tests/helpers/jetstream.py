"""Test-side JetStream set-up and inspection, with a plain nats-py client (never the link)."""

from __future__ import annotations

from dataclasses import dataclass

import nats
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
