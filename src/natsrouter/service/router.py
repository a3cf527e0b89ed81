"""The Router: policies, decider, decide intake (NATS and HTTP), assignments and consumers.

Owns their lifecycle. ``start`` loads the policies (an invalid set stops start-up), declares
the streams (with ``jetstream_manage_streams``), subscribes to the decide subject in its
queue group, answers the NATS services protocol (``$SRV.*``), starts the durable consumers
and the HTTP decide endpoint, and a watcher that reloads the policies when their files
change. ``reload_policies`` (also called on SIGHUP) keeps the last valid set when the new one
is invalid. ``stop`` stops intake first, lets
in-flight work finish, and waits for the pending queue to drain, all within
``shutdown_timeout_ms``; it leaves the link to its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

from natsrouter.api import openapi
from natsrouter.api.http import HttpServer
from natsrouter.auth import DecideTokens, load_decide_tokens
from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.state import ConnectionState
from natsrouter.link.subscriptions import Consumer
from natsrouter.link.transport import StreamSpec
from natsrouter.observability.logging import get_logger
from natsrouter.observability.metrics import RouterMetrics
from natsrouter.routing.decider import Decider
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.policy import PolicyError, PolicyStore
from natsrouter.service.assignments import AssignmentPusher
from natsrouter.service.consumers import (
    ACKS_DURABLE,
    RESULTS_DURABLE,
    AcksConsumer,
    ResultsConsumer,
)
from natsrouter.service.decide import DecideService
from natsrouter.service.decide_auth import require_tokens
from natsrouter.service.decide_intakes import NatsDecideIntake, http_app
from natsrouter.service.events import RouterEvents
from natsrouter.service.idempotency import IdempotencyWindow
from natsrouter.service.nats_service import EndpointCounts, NatsService
from natsrouter.service.providers import NatsProvidersAdmin, ProvidersView, add_http_route
from natsrouter.service.shared_state import BreakerSync, SharedState

log = get_logger("natsrouter.router")

# Names of the streams the Router creates when missing (docs/router.md).
ASSIGNMENTS_STREAM = "ROUTER_ASSIGNMENTS"
ACKS_STREAM = "ROUTER_ACKS"
RESULTS_STREAM = "ROUTER_RESULTS"
USAGE_STREAM = "ROUTER_USAGE"
DLQ_STREAM = "ROUTER_DLQ"
# How often breaker states are re-reported (an open breaker turns half-open with time).
_TICK_S = 1.0


def stream_specs(settings: Settings) -> list[StreamSpec]:
    """The Router's streams; each duplicate window is the idempotency TTL."""
    window = float(settings.idempotency_ttl_seconds)
    replicas = settings.jetstream_stream_replicas
    dlq_subjects = (f"{settings.ack_subject}.dlq", f"{settings.result_subject}.dlq")
    return [
        StreamSpec(name, subjects, window, replicas=replicas)
        for name, subjects in (
            (ASSIGNMENTS_STREAM, (settings.assignment_subject,)),
            (ACKS_STREAM, (settings.ack_subject,)),
            (RESULTS_STREAM, (settings.result_subject,)),
            (USAGE_STREAM, (settings.usage_subject,)),
            (DLQ_STREAM, dlq_subjects),
        )
    ]


def _policy_files(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What the watcher compares: every policy file with its mtime and size."""
    try:
        paths = sorted(root.rglob("*.json"))
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    except OSError:
        return ()


class Router:
    def __init__(
        self,
        settings: Settings,
        link: Link,
        metrics: RouterMetrics,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        decide_tokens: DecideTokens | None = None,
    ) -> None:
        """``decide_tokens``: the tokens file as read once at start-up (read here when None)."""
        self.settings = settings
        self.link = link
        self.events = RouterEvents(metrics)
        self.policies = PolicyStore(Path(settings.policies_path))
        self.health = ProviderHealth(clock, on_state=self.events.breaker_state)
        self.decider = Decider(
            self.policies,
            self.health,
            rng=rng,
            clock=clock,
            on_session_too_long=self.events.metrics.sticky_session_too_long.inc,
        )
        self.shared: SharedState | None = None
        self._breaker_sync: BreakerSync | None = None
        if settings.shared_state_enabled:
            self.shared = SharedState(settings, link, self.events, clock=clock)
            self._breaker_sync = BreakerSync(
                self.shared, self.health, settings.shared_state_breaker_sync_ms / 1000
            )
            link.status_parts["shared_state"] = self.shared.status
        else:
            link.status_parts["shared_state"] = lambda: {"enabled": False}
        self.decide = DecideService(
            settings,
            self.decider,
            AssignmentPusher(link, settings.assignment_subject, self.events),
            self.events,
            clock,
            self.shared,
        )
        self.intake = NatsDecideIntake(link, self.decide, settings)
        counts = EndpointCounts()
        self.events.decide_observers.append(counts.record)
        self.nats_service = NatsService(link, settings, counts)
        idempotency = IdempotencyWindow(settings.idempotency_ttl_seconds, clock)
        self.acks = AcksConsumer(link, settings, self.events, idempotency)
        self.results = ResultsConsumer(link, settings, self.events, idempotency, self.health)
        app = http_app(self.decide, settings.nats_max_payload_size)
        tokens = decide_tokens
        if tokens is None and settings.decide_tokens_file:
            tokens = load_decide_tokens(settings.decide_tokens_file)
        if tokens is not None:
            require_tokens(app, tokens, self.decide, settings.nats_max_payload_size)
        # The providers view (service/providers.py): HTTP and the NATS admin subject.
        self.providers = ProvidersView(self.decider, self.nats_service.id)
        add_http_route(app, self.providers, tokens)
        openapi.add_route(app)
        self.providers_admin = NatsProvidersAdmin(link, self.providers)
        self.http = HttpServer(app, settings.http_host, settings.http_port)
        self._consumers: list[Consumer] = []
        self._watcher: asyncio.Task[None] | None = None
        self._syncing: asyncio.Task[None] | None = None
        self._seen_files: tuple[tuple[str, int, int], ...] = ()

    # -- policies ----------------------------------------------------------------------------

    def load_policies(self) -> int:
        """The first load: raises ``PolicyError`` (start-up stops with the file and field)."""
        self._seen_files = _policy_files(self.policies.root)
        count = self.policies.reload()
        self.health.configure(self.policies.all())
        self.events.policies_loaded(count, str(self.policies.root))
        return count

    def reload_policies(self) -> bool:
        """Load the directory again; on an invalid file the previous set stays in force."""
        try:
            self.load_policies()
        except PolicyError as err:
            self.events.policy_reload_failed(str(err), str(err.path), err.field)
            return False
        return True

    async def _watch(self) -> None:
        interval_ms = self.settings.policies_reload_interval_ms
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(_TICK_S if not interval_ms else min(_TICK_S, interval_ms / 1000))
            try:
                self.health.publish_states()
                if interval_ms and time.monotonic() - last_check >= interval_ms / 1000:
                    last_check = time.monotonic()
                    if _policy_files(self.policies.root) != self._seen_files:
                        self.reload_policies()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a bad tick
                self.events.internal_error("policy watcher", exc)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving; raises ``PolicyError`` when the policies are invalid."""
        self.load_policies()
        if self.settings.jetstream_manage_streams:
            for spec in stream_specs(self.settings):
                await self.link.declare_stream(spec)
        if self.shared is not None:
            await self.shared.start()
        await self.intake.start()
        await self.nats_service.start()
        await self.providers_admin.start()
        manage = self.settings.jetstream_manage_streams
        for handler, stream, subject, durable in (
            (self.results, RESULTS_STREAM, self.settings.result_subject, RESULTS_DURABLE),
            (self.acks, ACKS_STREAM, self.settings.ack_subject, ACKS_DURABLE),
        ):
            # Unmanaged streams may have any name: nats-py finds the one with the subject.
            consumer_spec = handler.spec(stream if manage else "", subject, durable)
            self._consumers.append(await self.link.consume(consumer_spec, handler))
        await self.http.start()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="policies")
        if self._breaker_sync is not None:
            self._syncing = asyncio.get_running_loop().create_task(
                self._breaker_sync.run(), name="breaker-sync"
            )

    async def stop(self) -> int:
        """Stop intake, finish in-flight work, drain the pending queue; returns what is left."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_ms / 1000

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        for task in (self._watcher, self._syncing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._breaker_sync is not None:
            await self._breaker_sync.close()
        # Draining waits for a server round trip: bounded, for a server that does not answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.intake.stop(), left())
        await self.nats_service.stop()
        await self.providers_admin.stop()
        await self.http.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.intake.drain(), left())
        for consumer in self._consumers:
            await self.link.stop_consumer(consumer, grace_s=left())
        self._consumers.clear()
        while self.link.pending.count and left() > 0:
            if self.link.state is not ConnectionState.CONNECTED:
                break  # nothing will drain it now
            await asyncio.sleep(0.05)
        return self.link.pending.count
