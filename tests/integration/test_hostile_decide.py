"""Hostile decide requests against a real Router and nats-server: refused, nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import rmetric
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration

ROUTER_STREAMS = (
    "ROUTER_ASSIGNMENTS",
    "ROUTER_ACKS",
    "ROUTER_RESULTS",
    "ROUTER_USAGE",
    "ROUTER_DLQ",
)
# Subjects the Router owns (with the defaults), the JetStream API and an inbox.
RESERVED = (
    "beamline.usage.v1.metered",
    "caf.exec.assign.v1.ack",
    "caf.exec.assign.v1.ack.dlq",
    "caf.exec.result.v1",
    "caf.exec.result.v1.dlq",
    "beamline.router.v1.decide",
    "beamline.router.v1.decide.reply",
    "$JS.API.STREAM.DELETE.ROUTER_USAGE",
    "_INBOX.abc",
)


async def stream_sizes(url: str) -> dict[str, int]:
    return {name: len(await stored_messages(url, name)) for name in ROUTER_STREAMS}


def push_to(subject: str) -> bytes:
    return json.dumps(decide_request(push_assignment=True, assignment_subject=subject)).encode()


async def test_reserved_assignment_subjects_are_refused_and_nothing_is_stored(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Router-owned, $ and _INBOX subjects: invalid_request naming the field, streams empty."""
    router = await make_router([nats_server.url], assignment_subjects_allowed=">")
    assert await router.link.wait_connected(5)
    answers: list[dict[str, Any]] = []
    for subject in RESERVED:
        answers.append(await nats_decide(nats_server.url, push_to(subject)))
        status, answer = await http_decide(router.http.port, push_to(subject))
        assert status == 400
        answers.append(answer)
    assert {
        (a["error"]["code"], a["error"]["details"]["field"], a["error"]["details"]["reason"])
        for a in answers
    } == {("invalid_request", "assignment_subject", "reserved")}
    assert await stream_sizes(nats_server.url) == dict.fromkeys(ROUTER_STREAMS, 0)
    refused = 2 * len(RESERVED)
    assert rmetric(router, "router_assignment_subject_refused_total", reason="reserved") == refused
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == refused
    assert rmetric(router, "router_assignments_total", outcome="sent") == 0


async def test_by_default_only_the_assignment_subject_and_its_sub_subjects_are_allowed(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Default: caf.exec.assign.v1 and caf.exec.assign.v1.gpu pass, custom.assign does not."""
    await create_stream(nats_server.url, "GPU", ["caf.exec.assign.v1.gpu"])
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1.gpu"))
    assert (answer["assignment"]["outcome"], answer["assignment"]["stream"]) == ("sent", "GPU")
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1"))
    assert answer["assignment"]["stream"] == "ROUTER_ASSIGNMENTS"
    status, answer = await http_decide(router.http.port, push_to("custom.assign"))
    assert (status, answer["error"]["details"]) == (
        400,
        {"field": "assignment_subject", "reason": "not_allowed"},
    )
    assert rmetric(router, "router_assignment_subject_refused_total", reason="not_allowed") == 1


async def test_operator_patterns_allow_other_subjects(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """assignment_subjects_allowed = custom.*: custom.assign is used, other.x refused."""
    await create_stream(nats_server.url, "CUSTOM", ["custom.assign"])
    router = await make_router([nats_server.url], assignment_subjects_allowed="custom.*")
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, push_to("custom.assign"))
    assert answer["assignment"]["stream"] == "CUSTOM"
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1.gpu"))
    assert answer["error"]["details"]["reason"] == "not_allowed"
