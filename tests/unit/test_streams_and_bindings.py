"""Stream management and subscriptions with a fake transport: retried later, bound anew."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.errors import AuthenticationError, OperationTimeoutError
from natsrouter.link.bindings import Bindings
from natsrouter.link.connection import ConnectionSupervisor
from natsrouter.link.kv import BucketKeeper
from natsrouter.link.streams import StreamKeeper
from natsrouter.link.tasks import TaskOwner
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import (
    BucketSpec,
    DirectHandler,
    HandlerFailed,
    InboundMessage,
    MessageHandler,
    NativeSubscription,
    StreamSpec,
)
from natsrouter.observability.metrics import LinkMetrics
from tests.conftest import FAST
from tests.helpers.fake_transport import FakeConnection, FakeServer, FakeTransport


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Flaky(FakeConnection):
    """A connection whose stream and bucket checks time out once and whose ``refused``
    subjects are refused."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__(FakeServer(), "fake", lambda *_: None)
        self.stream_timeouts = 1
        self.bucket_timeouts = 1
        self.ensured: list[str] = []
        self.bound: list[str] = []
        self.refused = refused

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        if self.stream_timeouts:
            self.stream_timeouts -= 1
            raise OperationTimeoutError("electing a leader")
        self.ensured.append(spec.name)
        return True

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        if self.bucket_timeouts:
            self.bucket_timeouts -= 1
            raise OperationTimeoutError("electing a leader")
        self.ensured.append(spec.name)
        return True

    async def subscribe(
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        if subject in self.refused:
            raise AuthenticationError(f"Permissions Violation for Subscription to {subject}")
        self.bound.append(subject)
        return await super().subscribe(subject, queue, handler, on_failure, direct=direct)


def _telemetry() -> LinkTelemetry:
    return LinkTelemetry(LinkMetrics(CollectorRegistry()))


def _bindings() -> Bindings:
    """Bindings over a supervisor that never connects (the tests bind by hand)."""
    settings = build_settings({**FAST, "nats_url": "nats://fake:4222"})
    telemetry, tasks = _telemetry(), TaskOwner(_telemetry().log)
    session = ConnectionSupervisor(
        settings,
        ("nats://fake:4222",),
        FakeTransport(),
        telemetry,
        tasks,
        rng=random.Random(0),
        clock=Clock(),
        wall_clock=Clock(),
    )
    return Bindings(session, telemetry, tasks, random.Random(0))


async def test_a_stream_check_that_times_out_is_tried_again_later(logs: list[Any]) -> None:
    """Timed out: logged, the connection kept; tried again once recheck_s has passed."""
    clock = Clock()
    keeper = StreamKeeper(_telemetry(), clock, recheck_s=2.0)
    conn = Flaky(set())
    await keeper.declare(StreamSpec("S", ("s.>",)), conn)  # never raises
    await keeper.recheck(conn)  # not due yet (the clock has not moved)
    clock.now = 2.5
    await keeper.recheck(conn)
    assert conn.ensured == ["S"]
    assert [e["error_code"] for e in logs if "error_code" in e] == ["NATS_STREAM_ERROR"]


async def test_a_bucket_check_that_times_out_is_tried_again_later(logs: list[Any]) -> None:
    """Timed out: logged for its stream KV_<name>, the connection kept; tried again later."""
    clock = Clock()
    keeper = BucketKeeper(_telemetry(), clock, recheck_s=2.0)
    conn = Flaky(set())
    await keeper.declare(BucketSpec("B"), conn)  # never raises
    await keeper.recheck(conn)  # not due yet (the clock has not moved)
    clock.now = 2.5
    await keeper.recheck(conn)
    assert conn.ensured == ["B"]
    failed = [(e["error_code"], e["stream"]) for e in logs if "error_code" in e]
    assert failed == [("NATS_STREAM_ERROR", "KV_B")]


async def test_a_subscription_refused_on_connect_leaves_the_others_bound() -> None:
    """A refusal is recorded on its handle; the other subscriptions are bound."""
    bindings = _bindings()

    async def handler(_: InboundMessage) -> None:
        return None

    subs = [await bindings.subscribe(s, handler) for s in ("a.x", "secret.x", "b.x")]
    conn = Flaky({"secret.x"})
    await bindings.bind_all(conn, 1)
    assert conn.bound == ["a.x", "b.x"]
    assert [s.error is not None for s in subs] == [False, True, False]
    assert [s.bound_generation for s in subs] == [1, 0, 1]


class Unsubscribing(Flaky):
    """A connection that, while binding ``during``, runs ``action`` (another task's unsubscribe)."""

    def __init__(self, during: str) -> None:
        super().__init__(set())
        self.during = during
        self.action: Any = None

    async def subscribe(
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        if subject == self.during and self.action is not None:
            await self.action()
        return await super().subscribe(subject, queue, handler, on_failure, direct=direct)


async def test_an_unsubscribe_during_bind_all_skips_no_other_subscription() -> None:
    """Removing a bound handle while a later one binds still binds every remaining one."""
    bindings = _bindings()

    async def handler(_: InboundMessage) -> None:
        return None

    subs = [await bindings.subscribe(s, handler) for s in ("a.x", "b.x", "c.x")]
    conn = Unsubscribing("b.x")

    async def drop_first() -> None:
        await bindings.unsubscribe(subs[0])

    conn.action = drop_first
    await bindings.bind_all(conn, 1)
    assert conn.bound == ["a.x", "b.x", "c.x"]
    assert [s.bound_generation for s in subs[1:]] == [1, 1]
