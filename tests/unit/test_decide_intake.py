"""The NATS intake's handler for a decide answered at once: replied to, counted, slot freed."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.errors import Reason
from natsrouter.link.outcome import Outcome, Result
from natsrouter.link.sender import SENT
from natsrouter.link.transport import InboundMessage
from natsrouter.observability.metrics import RouterMetrics
from natsrouter.routing.decider import Decider
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.policy import PolicyStore
from natsrouter.service.assignments import AssignmentPusher
from natsrouter.service.decide import DecideService
from natsrouter.service.decide_intakes import NatsDecideIntake
from natsrouter.service.events import RouterEvents
from natsrouter.service.nats_service import EndpointCounts


class _Link:
    """``reply_now`` giving what the test sets, and keeping what it was asked to send."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.sent: list[tuple[str, bytes]] = []

    def reply_now(self, subject: str, payload: bytes, headers: Any = None) -> Any:
        self.sent.append((subject, payload))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result() if callable(self.result) else self.result


def _intake(result: Any) -> tuple[NatsDecideIntake, DecideService, EndpointCounts, _Link]:
    root = Path(tempfile.mkdtemp())
    (root / "t").mkdir()
    (root / "t" / "default.json").write_text(
        json.dumps({"providers": [{"name": "a", "weight": 1}]})
    )
    store = PolicyStore(root)
    store.reload()
    settings = build_settings({"policies_path": str(root)})
    events = RouterEvents(RouterMetrics(CollectorRegistry()))
    counts = EndpointCounts()
    events.decide_observers.append(counts.record)
    pusher: AssignmentPusher = AssignmentPusher.__new__(AssignmentPusher)  # never called
    service = DecideService(settings, Decider(store, ProviderHealth()), pusher, events)
    link = _Link(result)
    return NatsDecideIntake(link, service, settings), service, counts, link  # type: ignore[arg-type]


def _request() -> InboundMessage:
    raw = json.dumps(
        {
            "version": "1",
            "request_id": "r-1",
            "tenant_id": "t",
            "task": {"type": "text", "payload": {}},
        }
    )
    return InboundMessage("router.decide", raw.encode(), None, "_INBOX.x.1")


def _outcomes(service: DecideService) -> dict[str, float]:
    return {o: c.value for o, c in service.events._decide.items() if c.value}


def test_a_reply_sent_now_is_counted_ok_and_gives_the_slot_back() -> None:
    """SENT: the answer goes to the inbox, counted ok in the metric and $SRV.STATS."""
    intake, service, counts, link = _intake(SENT)
    intake._on_message(_request())
    subject, payload = link.sent[0]
    assert (subject, json.loads(payload)["decision"]["provider_id"]) == ("_INBOX.x.1", "a")
    assert (_outcomes(service), counts.num_requests, counts.num_errors) == ({"ok": 1}, 1, 0)
    assert service.in_flight == 0


def test_a_reply_dropped_is_counted_reply_failed() -> None:
    """A dropped reply (not connected) is counted reply_failed, an error of the endpoint."""
    intake, service, counts, _ = _intake(Result(Outcome.DROPPED, Reason.NOT_CONNECTED))
    intake._on_message(_request())
    assert (_outcomes(service), counts.last_error) == ({"reply_failed": 1}, "reply_failed")
    assert service.in_flight == 0


def test_a_reply_that_raises_is_counted_reply_failed_and_the_handler_returns() -> None:
    """An error raised by reply_now is logged, counted reply_failed; the handler keeps going."""
    intake, service, _, _ = _intake(RuntimeError("boom"))
    intake._on_message(_request())
    assert (_outcomes(service), service.in_flight) == ({"reply_failed": 1}, 0)


def test_a_reply_that_waits_holds_the_slot_until_sent() -> None:
    """A reply given as a coroutine holds the slot in a task; counted ok once it is sent."""

    async def later() -> Result:
        return SENT

    async def run() -> None:
        intake, service, _, _ = _intake(later)
        intake._on_message(_request())
        assert (service.in_flight, _outcomes(service)) == (1, {})
        await intake.drain()
        assert (service.in_flight, _outcomes(service)) == (0, {"ok": 1})

    asyncio.run(run())


def test_a_request_without_an_inbox_is_answered_on_the_reply_subject() -> None:
    """No reply inbox: the answer is published on <decide_subject>.reply, then counted ok."""

    async def run() -> None:
        intake, service, _, link = _intake(SENT)
        published: list[str] = []

        async def publish(subject: str, payload: bytes) -> Result:
            published.append(subject)
            return SENT

        link.publish = publish  # type: ignore[attr-defined]
        intake._on_message(_request()._replace(reply=None))
        await intake.drain()
        assert (published, link.sent, _outcomes(service)) == (
            [f"{build_settings({}).decide_subject}.reply"],
            [],
            {"ok": 1},
        )
        assert service.in_flight == 0

    asyncio.run(run())
