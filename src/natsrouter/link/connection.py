"""Connection supervision: connect, back off, watch, and move between connection states.

The supervisor owns the one ``Connection`` of the link and its ``ConnectionState`` (changed
only in ``_transition``). It connects and reconnects by itself (``_supervise``): exponential
backoff with jitter, rotating through the server pool, starting even while NATS is down,
declaring the outage exhausted after ``nats_reconnect_attempts`` and applying
``nats_on_reconnect_exhausted``. It finds half-open links with its own pings (``_watchdog``).

What happens on a connection (streams, subscriptions, replay) is not its business: the
owner passes ``SessionHooks``. Every connection gets a new ``generation``; a loop bound to
an older generation stops by itself.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from natsrouter.config import ExhaustedPolicy, Settings, redact_url
from natsrouter.errors import ConnectionClosedError, LinkError
from natsrouter.link.backoff import BackoffPolicy
from natsrouter.link.state import ConnectionState, check_transition
from natsrouter.link.tasks import TaskOwner, cancel_and_wait
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import Connection, Transport

# A watchdog ping that fails this many times in a row means the link is dead.
_MISSED_PINGS_LOST = 2
#: A connection proves healthy once it has been up this long and a watchdog PING was
#: answered since: only then does the backoff start again from the base delay (and the
#: exhaustion count from zero). A server or balancer that accepts and drops at once thus
#: keeps backing off to the cap and reaches the exhaustion policy.
HEALTHY_AFTER_S = 2.0


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat()


async def _nothing_async(_conn: Connection, _generation: int) -> None:
    return None


def _nothing(*_: object) -> None:
    return None


@dataclass
class SessionHooks:
    """What the owner does at each step of a connection's life (all optional)."""

    #: Before the connection counts as connected: streams, subscriptions. A ``LinkError``
    #: raised here fails the attempt.
    prepare: Callable[[Connection, int], Awaitable[None]] = _nothing_async
    #: Just after the move to ``connected`` (starts the replay).
    connected: Callable[[Connection, int], None] = _nothing
    #: Just after a loss was recorded (stops the replay).
    lost: Callable[[], None] = _nothing
    #: After every state change (the publish path recomputes where publishes go).
    state_changed: Callable[[], None] = _nothing
    #: After each answered watchdog ping (periodic work while connected).
    healthy: Callable[[Connection, int], Awaitable[None]] = _nothing_async
    #: Before each connection attempt (expiry of pending items).
    before_attempt: Callable[[], None] = _nothing


class ConnectionSupervisor:
    """Keeps one connection to a server pool up, and says which state it is in."""

    def __init__(
        self,
        settings: Settings,
        servers: Sequence[str],
        transport: Transport,
        telemetry: LinkTelemetry,
        tasks: TaskOwner,
        *,
        rng: random.Random,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        hooks: SessionHooks | None = None,
    ) -> None:
        if not servers:
            raise ValueError("the link needs at least one server URL")
        self._settings = settings
        self.servers = tuple(servers)
        self._transport = transport
        self._t = telemetry
        self._tasks = tasks
        self._rng = rng
        self._clock = clock
        self._wall = wall_clock
        self.hooks = hooks or SessionHooks()
        self.backoff = BackoffPolicy(
            settings.nats_reconnect_delay_ms,
            settings.nats_max_reconnect_delay_ms,
            settings.nats_reconnect_jitter,
        )
        self.state = ConnectionState.CONNECTING
        telemetry.metrics.connection_status.set(self.state.gauge)
        self.connected = asyncio.Event()
        self._lost = asyncio.Event()
        self.conn: Connection | None = None
        self._dead: list[Connection] = []
        #: Bumped on every attempt, loss and close: loops of an older one stop.
        self.generation = 0
        self._server_index = 0
        self.current_server: str | None = None
        # The current episode of not being connected (reset on connect).
        self.attempts = 0  # reconnect attempts made in this episode
        self._had_initial_attempt = False
        self.exhausted = False
        self._up_since = 0.0
        #: The current connection proved healthy (see HEALTHY_AFTER_S).
        self.proved = False
        self.outage_started: float | None = None  # monotonic; set by a loss
        self.last_connected_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_failure_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self.closed = False
        #: Set when the exhaustion policy is ``exit``: the process should exit non-zero.
        self.exit_requested = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.task is None:
            self.task = self._tasks.own(self._supervise(), "supervisor")

    @property
    def running(self) -> bool:
        """False once the supervisor stopped for good (exit policy) while not closed."""
        return self.task is None or not self.task.done() or self.closed

    async def close(self) -> None:
        """Stop supervising and close the connection; idempotent."""
        if self.closed:
            return
        self.closed = True
        self.generation += 1  # every loop bound to a connection ends
        await cancel_and_wait([t for t in (self.task, self._watchdog_task) if t])
        conn, self.conn = self.conn, None
        if conn is not None:
            await conn.close()
        await self._close_dead()
        if self.state is not ConnectionState.DISCONNECTED:
            self._transition(ConnectionState.DISCONNECTED, "closed")

    @property
    def fail_open_active(self) -> bool:
        if self._settings.nats_fail_open_mode:
            return True
        return (
            self.exhausted
            and self.state is not ConnectionState.CONNECTED
            and self._settings.nats_on_reconnect_exhausted is ExhaustedPolicy.FAIL_OPEN
        )

    def live(self) -> tuple[Connection, int] | None:
        """The connection and its generation while connected, else None."""
        conn = self.conn
        if conn is None or self.state is not ConnectionState.CONNECTED:
            return None
        return conn, self.generation

    def _transition(self, new: ConnectionState, why: str) -> None:
        check_transition(self.state, new)
        old, self.state = self.state, new
        self._t.metrics.connection_status.set(new.gauge)
        if new is ConnectionState.CONNECTED:
            self.connected.set()
        else:
            self.connected.clear()
        self.hooks.state_changed()
        self._t.log.debug("connection state changed", old=old.value, new=new.value, why=why)

    # -- connecting --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self.closed:
            await self._close_dead()
            if self.state is ConnectionState.CONNECTED:
                await self._lost.wait()
                self._lost.clear()
                continue
            if (
                self.exhausted
                and self._settings.nats_on_reconnect_exhausted is ExhaustedPolicy.EXIT
            ):
                self.exit_requested.set()
                return
            await self._attempt()

    async def _attempt(self) -> None:
        """One connection attempt, preceded by its backoff delay unless it is the very first."""
        self.hooks.before_attempt()
        attempt = 0
        if self._had_initial_attempt:
            attempt = self.attempts + 1
            delay_ms = self.backoff.delay_ms(self.attempts, self._rng)
            self.attempts = attempt
            self._t.reconnect_attempt(attempt, self._settings.nats_reconnect_attempts, delay_ms)
            await asyncio.sleep(delay_ms / 1000)
        self._had_initial_attempt = True
        # Round robin: after a loss, the first attempt goes to the next server in the pool.
        server = self.servers[self._server_index % len(self.servers)]
        self._server_index += 1
        self.generation += 1
        generation = self.generation
        conn: Connection | None = None
        try:
            conn = await self._transport.connect(server, partial(self.on_lost, generation))
            await self.hooks.prepare(conn, generation)
        except LinkError as err:
            if conn is not None:
                await conn.close()
            self._attempt_failed(err, server, attempt)
            return
        except asyncio.CancelledError:  # closing while binding: leave no connection open
            if conn is not None:
                await conn.close()
            raise
        self._connected_to(conn, server)

    def _attempt_failed(self, err: LinkError, server: str, attempt: int) -> None:
        self.last_failure_at = self._wall()
        self.last_failure_reason = err.reason.value
        self._t.connect_failed(err, redact_url(server), attempt)
        if attempt == 0:
            return
        self._t.reconnect_failed(err, attempt)
        self._check_exhausted(attempt)

    def _check_exhausted(self, attempt: int) -> None:
        limit = self._settings.nats_reconnect_attempts
        if limit and attempt >= limit and not self.exhausted:
            self.exhausted = True
            policy = self._settings.nats_on_reconnect_exhausted
            self._t.exhausted(limit, policy.value)
            if self.state is not ConnectionState.DISCONNECTED:
                self._transition(ConnectionState.DISCONNECTED, "reconnection exhausted")

    def _connected_to(self, conn: Connection, server: str) -> None:
        self.conn = conn
        self.current_server = server
        self.last_connected_at = self._wall()
        self._t.established(redact_url(server))
        if self.outage_started is not None:
            self._t.restored(self.attempts, self._clock() - self.outage_started)
        self.outage_started = None
        # attempts and exhausted are reset once the connection proved healthy (_watchdog).
        self._up_since = self._clock()
        self.proved = False
        self._t.end_bursts()
        self._transition(ConnectionState.CONNECTED, "connected")
        generation = self.generation
        self._watchdog_task = self._tasks.own(self._watchdog(conn, generation), "watchdog")
        self.hooks.connected(conn, generation)

    def on_lost(self, generation: int, _conn: Connection | None, err: LinkError) -> None:
        """A connection died (server gone, pings unanswered, fault). Acts once per loss."""
        if generation != self.generation or self.state is not ConnectionState.CONNECTED:
            return
        conn, self.conn = self.conn, None
        if conn is not None:
            self._dead.append(conn)
        self.generation += 1  # stale handles and loops of the dead connection stop
        task = self._watchdog_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.hooks.lost()
        self.outage_started = self._clock()
        self.last_failure_at = self._wall()
        self.last_failure_reason = err.reason.value
        self._t.lost(err, self._settings.nats_reconnect_attempts)
        self._transition(ConnectionState.RECONNECTING, f"lost: {err.reason.value}")
        if not self.proved and self.attempts:
            # Dropped before it proved healthy: the attempt that made it counts as failed.
            self._t.reconnect_failed(err, self.attempts)
            if self.exhausted:
                # The same exhausted outage goes on: its policy still applies, not counted again.
                self._transition(ConnectionState.DISCONNECTED, "still exhausted")
            else:
                self._check_exhausted(self.attempts)
        self._lost.set()

    async def _close_dead(self) -> None:
        dead, self._dead = self._dead, []
        for conn in dead:
            await conn.close()

    async def _watchdog(self, conn: Connection, generation: int) -> None:
        """Ping on our own schedule: two unanswered pings in a row mean a dead link."""
        interval = self._settings.nats_ping_interval_ms / 1000
        missed = 0
        while generation == self.generation:
            if missed == 0:
                await asyncio.sleep(interval)
            try:
                await conn.ping(interval)
            except LinkError as err:
                if err.connection_lost:
                    self.on_lost(generation, conn, err)
                    return
                missed += 1
                if missed >= _MISSED_PINGS_LOST:
                    self.on_lost(
                        generation,
                        conn,
                        ConnectionClosedError(f"no answer to {missed} pings ({interval:g}s each)"),
                    )
                    return
                continue
            missed = 0
            if not self.proved and self._clock() - self._up_since >= HEALTHY_AFTER_S:
                self.proved = True
                self.attempts = 0
                self.exhausted = False
            await self.hooks.healthy(conn, generation)

    def status(self) -> dict[str, Any]:
        """The connection part of ``/status``."""
        outage_s = (
            None if self.outage_started is None else round(self._clock() - self.outage_started, 3)
        )
        ready = self.state is ConnectionState.CONNECTED
        return {
            "server": redact_url(self.current_server) if ready and self.current_server else None,
            "last_server": redact_url(self.current_server) if self.current_server else None,
            "servers": [redact_url(s) for s in self.servers],
            "reconnect_attempts": self.attempts,
            "max_reconnect_attempts": self._settings.nats_reconnect_attempts,
            "exhausted": self.exhausted,
            "exhausted_policy": self._settings.nats_on_reconnect_exhausted.value,
            "fail_open": self.fail_open_active,
            "outage_seconds": outage_s,
            "last_connected_at": _iso(self.last_connected_at),
            "last_failure_at": _iso(self.last_failure_at),
            "last_failure_reason": self.last_failure_reason,
        }
