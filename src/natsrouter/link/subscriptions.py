"""Handles for what the link keeps subscribed across reconnects.

A ``Subscription`` (core) or ``Consumer`` (JetStream durable pull consumer) is registered with
the link once and stays registered until the caller cancels it; the link binds it again on
every new connection, including handles asked for while disconnected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from natsrouter.link.transport import (
    ConsumerSpec,
    DirectHandler,
    JsMessage,
    MessageHandler,
    NativeSubscription,
)

JsHandler = Callable[[JsMessage], Awaitable[None]]


@dataclass(eq=False)
class Subscription:
    subject: str
    queue: str | None
    #: A ``DirectHandler`` when ``direct`` (Connection.subscribe).
    handler: MessageHandler | DirectHandler
    #: Delivered from the client's parser to a plain-function handler.
    direct: bool = False
    #: Generation of the connection it is bound to (0: not bound yet).
    bound_generation: int = 0
    native: NativeSubscription | None = None
    cancelled: bool = False
    #: Set when the server refused it for good (not a connection problem).
    error: str | None = None


@dataclass(eq=False)
class Consumer:
    spec: ConsumerSpec
    handler: JsHandler
    batch: int
    fetch_timeout_s: float
    bound_generation: int = 0
    delivered: int = 0
    stopping: bool = False
    busy: bool = False  # handing out a fetched batch
    #: The fetched batch being handed out, in order (empty between fetches).
    in_hand: list[JsMessage] = field(default_factory=list, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def cancelled(self) -> bool:
        return self.stopping or (self.task is not None and self.task.done())
