"""The Router as a NATS service: it answers the NATS services protocol on ``$SRV.*``.

Service discovery tools (``nats micro ls``, ``nats micro stats``, any client of the protocol)
find a Router by sending ``$SRV.PING``, ``$SRV.INFO`` or ``$SRV.STATS`` (also
``$SRV.<VERB>.router`` and ``$SRV.<VERB>.router.<id>``); every Router process answers with
its id, its version and its one endpoint, decide, with the subject, queue group and counts.

nats-py ships the protocol as ``nats.micro``, but that owns its subscriptions on a raw client:
they would not survive a reconnect through the link, and nothing outside ``link/`` touches
nats-py. So the same messages (schemas ``io.nats.micro.v1.ping_response``, ``info_response``,
``stats_response``) are answered here through the link's subscriptions, which the link binds
again on every new connection. The counts are fed by the decide path (``record``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from natsrouter import __version__
from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.subscriptions import Subscription
from natsrouter.link.transport import InboundMessage
from natsrouter.observability.logging import get_logger

log = get_logger("natsrouter.service")

SERVICE_NAME = "router"
ENDPOINT_NAME = "decide"
PREFIX = "$SRV"
VERBS = ("PING", "INFO", "STATS")
DESCRIPTION = "Routes jobs to providers: which provider should run this task"
PING_TYPE = "io.nats.micro.v1.ping_response"
INFO_TYPE = "io.nats.micro.v1.info_response"
STATS_TYPE = "io.nats.micro.v1.stats_response"


def _new_id() -> str:
    """A random instance id, 22 characters like a NATS NUID (letters and digits only)."""
    return secrets.token_hex(11).upper()


def _timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as nats.micro writes ``started``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class EndpointCounts:
    """What ``$SRV.STATS`` reports for the decide endpoint (NATS requests only)."""

    num_requests: int = 0
    num_errors: int = 0
    #: Seconds, summed as given: made nanoseconds when read (``record`` runs per decide).
    processing_time_s: float = 0.0
    last_error: str = ""

    def record(self, outcome: str, transport: str, duration_s: float) -> None:
        """One decide answered; an answer other than ``ok`` is an error of the endpoint."""
        if transport != "nats":
            return  # HTTP decides are not requests to the NATS endpoint
        self.num_requests += 1
        self.processing_time_s += duration_s
        if outcome != "ok":
            self.num_errors += 1
            self.last_error = outcome

    @property
    def processing_time_ns(self) -> int:
        return round(self.processing_time_s * 1e9)

    @property
    def average_processing_time_ns(self) -> int:
        return self.processing_time_ns // self.num_requests if self.num_requests else 0


class NatsService:
    """Answers ``$SRV.PING|INFO|STATS`` for this Router process until stopped."""

    def __init__(self, link: Link, settings: Settings, counts: EndpointCounts) -> None:
        self._link = link
        self._counts = counts
        self.id = _new_id()
        self.subject = settings.decide_subject
        self.queue_group = settings.decide_queue_group
        self.started = datetime.now(UTC)
        self._subscriptions: list[Subscription] = []

    def subjects(self) -> list[str]:
        """Every control subject answered: all services, this name, this instance."""
        return [
            subject
            for verb in VERBS
            for subject in (
                f"{PREFIX}.{verb}",
                f"{PREFIX}.{verb}.{SERVICE_NAME}",
                f"{PREFIX}.{verb}.{SERVICE_NAME}.{self.id}",
            )
        ]

    async def start(self) -> None:
        # No queue group: every Router answers, as every instance of a service must.
        for subject in self.subjects():
            self._subscriptions.append(await self._link.subscribe(subject, self._on_request))
        log.info(
            "registered as a NATS service", service=SERVICE_NAME, id=self.id, version=__version__
        )

    async def stop(self) -> None:
        for sub in self._subscriptions:
            await self._link.unsubscribe(sub)
        self._subscriptions.clear()

    async def _on_request(self, msg: InboundMessage) -> None:
        if not msg.reply:
            return  # a discovery request always has an inbox; nothing to answer otherwise
        verb = msg.subject.split(".")[1]
        body = {"PING": self.ping, "INFO": self.info, "STATS": self.stats}[verb]()
        # Sent now or dropped, never queued: a late answer reaches an inbox nobody reads.
        await self._link.reply(msg.reply, json.dumps(body, separators=(",", ":")).encode())

    def _identity(self, kind: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": SERVICE_NAME,
            "id": self.id,
            "version": __version__,
            "metadata": {},
        }

    def ping(self) -> dict[str, Any]:
        return self._identity(PING_TYPE)

    def info(self) -> dict[str, Any]:
        return {
            **self._identity(INFO_TYPE),
            "description": DESCRIPTION,
            "endpoints": [
                {
                    "name": ENDPOINT_NAME,
                    "subject": self.subject,
                    "queue_group": self.queue_group,
                    "metadata": {},
                }
            ],
        }

    def stats(self) -> dict[str, Any]:
        counts = self._counts
        return {
            **self._identity(STATS_TYPE),
            "started": _timestamp(self.started),
            "endpoints": [
                {
                    "name": ENDPOINT_NAME,
                    "subject": self.subject,
                    "queue_group": self.queue_group,
                    "num_requests": counts.num_requests,
                    "num_errors": counts.num_errors,
                    "last_error": counts.last_error,
                    "processing_time": counts.processing_time_ns,
                    "average_processing_time": counts.average_processing_time_ns,
                    "data": None,
                }
            ],
        }
