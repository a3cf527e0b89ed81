"""Ownership of the link's background tasks: a death is a bug, logged loudly, failing liveness.

Every task the link starts (supervisor, watchdog, replay, consumers) is created through
``TaskOwner.own``, so an unexpected exception is never lost in an unawaited task; ``close``
cancels them with ``cancel_and_wait``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them, cancelling again if one swallowed the cancellation.

    nats-py's ``Subscription.next_msg`` turns a cancellation into ``ConnectionClosedError``
    when the connection is closed, so one ``cancel()`` is not always enough.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


class TaskOwner:
    """Creates the link's tasks and remembers the first one that died of an exception."""

    def __init__(self, log: Any) -> None:
        self._log = log
        #: The exception of a task that died (a bug, not a NATS failure); fails liveness.
        self.crashed: BaseException | None = None

    def own(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.crashed = exc
            self._log.error("link task died", task=task.get_name(), error=exc, exc_info=exc)
