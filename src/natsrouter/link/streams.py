"""Stream management: the streams the link creates when missing, on every connection.

An existing stream is left as it is (an operator may have tuned it); only its absence is
repaired. A check that fails without losing the connection (a timeout while a cluster elects
the stream's leader, a refusal) is logged (``NATS_STREAM_ERROR``) and tried again after
watchdog pings, at most every ``nats_max_reconnect_delay_ms``: it does not cost the
connection, which decides and the other streams can use meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable

from natsrouter.errors import LinkError
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import Connection, StreamSpec


class StreamKeeper:
    """Remembers declared streams and ensures them on each connection."""

    def __init__(
        self, telemetry: LinkTelemetry, clock: Callable[[], float], recheck_s: float
    ) -> None:
        self._t = telemetry
        self._clock = clock
        self._recheck_s = recheck_s
        self.specs: list[StreamSpec] = []
        self._unsure: dict[str, StreamSpec] = {}  # checks that failed, to try again
        self._last_check = 0.0

    async def declare(self, spec: StreamSpec, conn: Connection | None) -> None:
        """Remember ``spec``; ensure it now on ``conn`` when given. Never raises."""
        self.specs.append(spec)
        if conn is not None:
            try:
                await self.ensure(conn, spec)
            except LinkError:
                return  # lost: the next connection ensures it

    async def ensure_all(self, conn: Connection) -> None:
        """Ensure every declared stream; raises only when the connection is lost."""
        for spec in self.specs:
            await self.ensure(conn, spec)

    async def ensure(self, conn: Connection, spec: StreamSpec) -> None:
        """Raises only when the connection is lost; other failures are retried later."""
        try:
            created = await conn.ensure_stream(spec)
        except LinkError as err:
            self._t.stream_failed(spec.name, err)
            self._unsure[spec.name] = spec
            if err.connection_lost:
                raise
            return
        self._unsure.pop(spec.name, None)
        if created:
            self._t.stream_created(spec.name, spec.subjects)

    async def recheck(self, conn: Connection) -> None:
        """Try the streams whose check failed again, at most every ``recheck_s``."""
        if not self._unsure or self._clock() - self._last_check < self._recheck_s:
            return
        self._last_check = self._clock()
        for spec in list(self._unsure.values()):
            try:
                await self.ensure(conn, spec)
            except LinkError:
                return  # lost: the next connection checks every stream anyway
