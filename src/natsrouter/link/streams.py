"""Stream management: the streams the link creates when missing, on every connection.

An existing stream is left as it is (an operator may have tuned it); only its absence is
repaired. A check that fails without losing the connection (a timeout while a cluster elects
the stream's leader, a refusal) is logged (``NATS_STREAM_ERROR``) and tried again after
watchdog pings, at most every ``nats_max_reconnect_delay_ms``: it does not cost the
connection, which decides and the other streams can use meanwhile.

Key-value buckets are streams too (``KV_<name>``) and are kept the same way:
``kv.BucketKeeper`` is the other ``DeclaredStreams``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from natsrouter.errors import LinkError
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import BucketSpec, Connection, StreamSpec

SpecT = TypeVar("SpecT", StreamSpec, BucketSpec)


class DeclaredStreams(ABC, Generic[SpecT]):
    """Remembers declared specs and ensures them on each connection; failed checks retried.

    A subclass says how one spec is created when missing, and which stream it is.
    """

    def __init__(
        self, telemetry: LinkTelemetry, clock: Callable[[], float], recheck_s: float
    ) -> None:
        self._t = telemetry
        self._clock = clock
        self._recheck_s = recheck_s
        self.specs: list[SpecT] = []
        self._unsure: dict[str, SpecT] = {}  # checks that failed, to try again
        self._last_check = 0.0

    @abstractmethod
    async def _create_missing(self, conn: Connection, spec: SpecT) -> bool:
        """Create ``spec`` unless it exists; True when it was created."""

    @abstractmethod
    def _stream_name(self, spec: SpecT) -> str:
        """The stream that holds ``spec`` (the name the log gives)."""

    @abstractmethod
    def _subjects(self, spec: SpecT) -> tuple[str, ...]:
        """The subjects of that stream (logged when it is created)."""

    async def declare(self, spec: SpecT, conn: Connection | None) -> None:
        """Remember ``spec``; ensure it now on ``conn`` when given. Never raises."""
        self.specs.append(spec)
        if conn is not None:
            try:
                await self.ensure(conn, spec)
            except LinkError:
                return  # lost: the next connection ensures it

    async def ensure_all(self, conn: Connection) -> None:
        """Ensure every declared spec; raises only when the connection is lost."""
        for spec in self.specs:
            await self.ensure(conn, spec)

    async def ensure(self, conn: Connection, spec: SpecT) -> None:
        """Raises only when the connection is lost; other failures are retried later."""
        try:
            created = await self._create_missing(conn, spec)
        except LinkError as err:
            self._t.stream_failed(self._stream_name(spec), err)
            self._unsure[spec.name] = spec
            if err.connection_lost:
                raise
            return
        self._unsure.pop(spec.name, None)
        if created:
            self._t.stream_created(self._stream_name(spec), self._subjects(spec))

    async def recheck(self, conn: Connection) -> None:
        """Try the specs whose check failed again, at most every ``recheck_s``."""
        if not self._unsure or self._clock() - self._last_check < self._recheck_s:
            return
        self._last_check = self._clock()
        for spec in list(self._unsure.values()):
            try:
                await self.ensure(conn, spec)
            except LinkError:
                return  # lost: the next connection checks every spec anyway


class StreamKeeper(DeclaredStreams[StreamSpec]):
    """Remembers declared streams and ensures them on each connection."""

    async def _create_missing(self, conn: Connection, spec: StreamSpec) -> bool:
        return await conn.ensure_stream(spec)

    def _stream_name(self, spec: StreamSpec) -> str:
        return spec.name

    def _subjects(self, spec: StreamSpec) -> tuple[str, ...]:
        return spec.subjects
