"""Wait on a condition with a deadline, never on a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.aio.client import Client


async def wait_for(
    condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition"
) -> float:
    """Poll ``condition`` until true; return the seconds it took. Fails the test on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def ordered_flush(nc: Client) -> None:
    """A round trip that covers every command sent before it (publishes, SUB, UNSUB).

    nats-py's own flush sends its PING ahead of what is still in its buffer (docs/link.md,
    "Subscriptions and consumers"): the buffer is written first, then the round trip.
    """
    await wait_for(lambda: nc.pending_data_size == 0, 5, "the client's buffer written")
    await nc.flush()
