"""Wait on a condition with a deadline, never on a bare sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


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
