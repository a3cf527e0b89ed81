"""Key-value buckets: declared like the streams, read and written on the live connection.

Router processes share a little state (decide idempotency, sticky sessions, circuit-breaker
states) in JetStream key-value buckets. A bucket is the stream ``KV_<name>``: it is created
when missing on every connection, after the streams, and an existing one is left as it is.
``BucketKeeper`` keeps them as ``streams.StreamKeeper`` keeps the streams (both are
``streams.DeclaredStreams``): a check that fails without losing the connection is logged
(``NATS_STREAM_ERROR``, stream ``KV_<name>``) and tried again after watchdog pings.

Reads and writes are never queued: shared state that arrives late is worse than none, so
each operation is tried once on the live connection, counted and timed as an operation
(``kv_get``, ``kv_put``, ``kv_create``, ``kv_update``), and a failure raises its typed ``LinkError``
(``NotConnectedError`` at once when there is no connection). The caller decides what to do
without the shared state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from natsrouter.errors import LinkError, NotConnectedError
from natsrouter.link.connection import ConnectionSupervisor
from natsrouter.link.streams import DeclaredStreams
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import BucketSpec, Connection, KvEntry
from natsrouter.operation import Operation

T = TypeVar("T")


def bucket_stream(name: str) -> str:
    """The name of the stream that holds bucket ``name``."""
    return f"KV_{name}"


class BucketKeeper(DeclaredStreams[BucketSpec]):
    """Remembers declared buckets and ensures them on each connection, after the streams."""

    async def _create_missing(self, conn: Connection, spec: BucketSpec) -> bool:
        return await conn.ensure_bucket(spec)

    def _stream_name(self, spec: BucketSpec) -> str:
        return bucket_stream(spec.name)

    def _subjects(self, spec: BucketSpec) -> tuple[str, ...]:
        return (f"$KV.{spec.name}.>",)


class KeyValueStore:
    """Get / put / create / update through the supervisor's connection."""

    def __init__(
        self,
        session: ConnectionSupervisor,
        telemetry: LinkTelemetry,
        clock: Callable[[], float],
        timeout_s: float,
    ) -> None:
        self._session = session
        self._t = telemetry
        self._clock = clock
        self._timeout_s = timeout_s

    async def get(self, bucket: str, key: str) -> KvEntry | None:
        """The key's entry, or None when it has no value (never written, or expired)."""
        return await self._run(
            Operation.KV_GET, lambda conn: conn.kv_get(bucket, key, self._timeout_s)
        )

    async def put(self, bucket: str, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; the new revision."""
        return await self._run(
            Operation.KV_PUT, lambda conn: conn.kv_put(bucket, key, value, self._timeout_s)
        )

    async def create(self, bucket: str, key: str, value: bytes) -> int | None:
        """Store ``value`` unless ``key`` has one: the new revision, or None (another won)."""
        return await self._run(
            Operation.KV_CREATE, lambda conn: conn.kv_create(bucket, key, value, self._timeout_s)
        )

    async def update(self, bucket: str, key: str, value: bytes, revision: int) -> int | None:
        """Store ``value`` if ``key`` is still at ``revision``: the new revision, or None."""
        return await self._run(
            Operation.KV_UPDATE,
            lambda conn: conn.kv_update(bucket, key, value, revision, self._timeout_s),
        )

    async def _run(self, op: Operation, call: Callable[[Connection], Awaitable[T]]) -> T:
        live = self._session.live()
        if live is None:
            err: LinkError = NotConnectedError()
            self._t.failed(op, err)
            raise err
        conn, generation = live
        started = self._clock()
        try:
            result = await call(conn)
        except LinkError as err:
            self._t.failed(op, err)
            if err.connection_lost:
                self._session.on_lost(generation, conn, err)
            raise
        self._t.succeeded(op, self._clock() - started)
        return result
