"""``natsrouter request`` and ``decide``: one request to a running Router, the reply on stdout.

``request SUBJECT [BODY]`` sends any NATS request; ``decide`` builds a DecideRequest from its
options (or takes one whole with ``--body``), sends it on ``decide_subject`` (or to
``POST /v1/decide`` with ``--http``) and prints the answer, exit 0 for a DecideResponse and
1 for an ErrorResponse or no answer.

The README and the runbooks talk to a running Router over NATS (a decide, ``$SRV.STATS``)
with nothing but what the two set-up commands install: the separate ``nats`` CLI is not on
PyPI, so it stays optional. The request goes through a ``Link`` like every other NATS
operation of the project, to the configured servers (with their credentials and TLS), or to
the embedded server's address when ``nats_url`` is empty.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
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


async def ask(settings: Settings, subject: str, body: bytes, timeout_s: float) -> bytes | None:
    """One request through a link of its own: the reply's bytes, or None (said on stderr)."""
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
            return None
        try:
            reply = await link.request(subject, body, timeout_ms=max(1, int(timeout_s * 1000)))
        except LinkError as err:
            print(f"natsrouter: request on {subject} failed: {err.reason}", file=sys.stderr)
            return None
        return reply.data
    finally:
        await link.close()


async def request(settings: Settings, subject: str, body: bytes, timeout_s: float) -> int:
    """Send one request; print the reply (exit 0) or say why there is none (exit 1)."""
    data = await ask(settings, subject, body, timeout_s)
    if data is None:
        return EXIT_FAILED
    print(data.decode(errors="replace"))
    return EXIT_OK


def decide_request(
    tenant_id: str,
    *,
    policy_id: str | None = None,
    task_type: str = "text",
    request_id: str | None = None,
    metadata: Sequence[str] = (),
    max_latency_ms: float | None = None,
    max_cost: float | None = None,
    push_assignment: bool = False,
) -> dict[str, Any]:
    """A DecideRequest from the command's options; ``metadata`` items are ``key=value``."""
    document: dict[str, Any] = {
        "version": "1",
        "request_id": request_id or str(uuid.uuid4()),
        "tenant_id": tenant_id,
        "task": {"type": task_type, "payload": {}},
    }
    if policy_id is not None:
        document["policy_id"] = policy_id
    if metadata:
        pairs = [item.partition("=") for item in metadata]
        bad = next(
            (item for item, (_, sep, _v) in zip(metadata, pairs, strict=True) if not sep), None
        )
        if bad is not None:
            raise ValueError(f"--metadata {bad!r}: expected key=value")
        document["metadata"] = {key: value for key, _, value in pairs}
    constraints = {
        k: v
        for k, v in (("max_latency_ms", max_latency_ms), ("max_cost", max_cost))
        if v is not None
    }
    if constraints:
        document["constraints"] = constraints
    if push_assignment:
        document["push_assignment"] = True
    return document


def http_decide_url(settings: Settings) -> str:
    """``POST /v1/decide`` of the Router these settings describe (a wildcard host: loopback)."""
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.http_port}/v1/decide"


async def _post(url: str, body: bytes, token: str | None, timeout_s: float) -> bytes | None:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
            session.post(url, data=body, headers=headers) as response,
        ):
            return await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"natsrouter: decide at {url} failed: {exc or type(exc).__name__}", file=sys.stderr)
        return None


async def decide(
    settings: Settings,
    body: bytes,
    timeout_s: float,
    *,
    http_url: str | None = None,
    token: str | None = None,
) -> int:
    """Send one DecideRequest; print the answer, exit 0 when it is a decision, else 1."""
    if http_url is not None:
        data = await _post(http_url, body, token, timeout_s)
    else:
        data = await ask(settings, settings.decide_subject, body, timeout_s)
    if data is None:
        return EXIT_FAILED
    try:
        answer = json.loads(data)
    except ValueError:
        print(data.decode(errors="replace"))
        return EXIT_FAILED
    print(json.dumps(answer, indent=2))
    return EXIT_OK if isinstance(answer, dict) and answer.get("ok") is True else EXIT_FAILED
