"""``natsrouter request SUBJECT [BODY]``: one NATS request through the link, the reply on stdout.

The README and the runbooks talk to a running Router over NATS (a decide, ``$SRV.STATS``)
with nothing but what the two set-up commands install: the separate ``nats`` CLI is not on
PyPI, so it stays optional. The request goes through a ``Link`` like every other NATS
operation of the project, to the configured servers (with their credentials and TLS), or to
the embedded server's address when ``nats_url`` is empty.
"""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry

from natsrouter.config import Settings, redact_url
from natsrouter.errors import LinkError
from natsrouter.link.link import Link
from natsrouter.link.pending import Limits, MemoryPendingQueue
from natsrouter.observability.metrics import LinkMetrics

EXIT_OK = 0
EXIT_FAILED = 1


def servers_of(settings: Settings) -> tuple[str, ...]:
    """The configured servers, or the embedded server ``natsrouter run`` would start."""
    return settings.nats_url or (f"nats://127.0.0.1:{settings.embedded_nats_port}",)


async def request(settings: Settings, subject: str, body: bytes, timeout_s: float) -> int:
    """Send one request; print the reply (exit 0) or say why there is none (exit 1)."""
    servers = servers_of(settings)
    # Never the configured spool: a request is not queued, and the Router that owns the spool
    # holds its lock.
    pending = MemoryPendingQueue(
        Limits(
            settings.nats_max_pending_operations,
            settings.nats_max_pending_bytes,
            settings.nats_pending_overflow,
        )
    )
    link = Link(settings, LinkMetrics(CollectorRegistry()), servers=servers, pending=pending)
    await link.start()
    try:
        if not await link.wait_connected(timeout_s):
            shown = ", ".join(redact_url(s) for s in servers)
            print(f"natsrouter: no NATS server answered at {shown}", file=sys.stderr)
            return EXIT_FAILED
        try:
            reply = await link.request(subject, body, timeout_ms=max(1, int(timeout_s * 1000)))
        except LinkError as err:
            print(f"natsrouter: request on {subject} failed: {err.reason}", file=sys.stderr)
            return EXIT_FAILED
        print(reply.data.decode(errors="replace"))
        return EXIT_OK
    finally:
        await link.close()
