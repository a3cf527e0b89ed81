"""Overload is answered, not dropped; a graceful stop answers every request it received."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link.faults import Fault, FaultTarget
from natsrouter.service.router import Router
from tests.conftest import RouterFactory
from tests.helpers.observe import codes, rmetric
from tests.helpers.waiting import ordered_flush, wait_for
from tests.integration.test_router_decide import decide_request, nats_decide

pytestmark = pytest.mark.integration
SUBJECT = "beamline.router.v1.decide"


def body(request_id: str, push: bool = False) -> bytes:
    return json.dumps(decide_request(request_id=request_id, push_assignment=push)).encode()


async def hold_the_only_slot(
    url: str, make_router: RouterFactory, push_delay_ms: int, reply_delay_ms: int
) -> tuple[Router, asyncio.Task[dict[str, Any]]]:
    """A Router with one slot, held by a push delayed ``push_delay_ms``, and every answer's
    publish then delayed ``reply_delay_ms``: the Router and the slow decide's task."""
    router = await make_router([url], decide_max_in_flight=1, nats_fault_injection_enabled=True)
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.delay(push_delay_ms))
    slow = asyncio.create_task(nats_decide(url, body("slow", True)))
    await wait_for(lambda: router.decide.in_flight == 1, 5, "one decide in flight")
    router.link.inject(FaultTarget.PUBLISH, Fault.delay(reply_delay_ms).on_subject("_INBOX.>"))
    return router, slow


async def test_beyond_decide_max_in_flight_a_decide_is_answered_overloaded_at_once(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """Two slow decides hold both slots: the third gets overloaded over NATS and HTTP 503."""
    router = await make_router(
        [nats_server.url], decide_max_in_flight=2, nats_fault_injection_enabled=True
    )
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.delay(1500))
    slow = [
        asyncio.create_task(nats_decide(nats_server.url, body(f"slow-{i}", True))) for i in (1, 2)
    ]
    await wait_for(lambda: router.decide.in_flight == 2, 5, "two decides in flight")
    answer = await nats_decide(nats_server.url, body("third"))
    assert answer["error"]["code"] == "overloaded"
    assert answer["context"]["request_id"] is None
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{router.http.port}/v1/decide", data=body("fourth")) as resp,
    ):
        assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
        assert (await resp.json())["error"]["code"] == "overloaded"
    assert all(not t.done() for t in slow)
    assert [a["ok"] for a in await asyncio.gather(*slow)] == [True, True]
    assert rmetric(router, "router_decide_total", outcome="overloaded") == 2
    assert codes(logs).count("ROUTER_DECIDE_OVERLOADED") == 1  # rate-limited


async def test_a_graceful_stop_answers_every_request_already_received(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """300 requests published, then stop: each one gets its answer (none dropped in buffers)."""
    # A subject of its own: a stray Router of another test that reconnects to a reused port
    # would share the default queue group and take some of the requests.
    subject = f"drain.{uuid.uuid4().hex}.decide"
    router = await make_router([nats_server.url], decide_subject=subject)
    assert await router.link.wait_connected(5)
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        answers: list[dict[str, Any]] = []

        async def collect(msg: Any) -> None:
            answers.append(json.loads(msg.data))

        await nc.subscribe(inbox + ".*", cb=collect)
        for i in range(300):
            await nc.publish(subject, body(f"r-{i}"), reply=f"{inbox}.{i}")
        # nats-py's flush may send its PING ahead of publishes still in its buffer (see
        # test_wire_order.py): once the buffer is written, the round trip covers all 300.
        await ordered_flush(nc)
        await router.stop()
        await wait_for(lambda: len(answers) == 300, 5, "every answer")
    finally:
        await nc.close()
    assert {a["ok"] for a in answers} == {True}
    assert rmetric(router, "router_decide_total", outcome="ok") == 300


async def test_a_decide_whose_answer_was_not_published_is_counted_reply_failed(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """The answer's publish fails: outcome reply_failed (not ok), ROUTER_DECIDE_REPLY_FAILED."""
    router = await make_router([nats_server.url], nats_fault_injection_enabled=True)
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH, Fault.error(Reason.SERVER_ERROR))
    nc = await nats.connect(nats_server.url)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(SUBJECT, body("lost"), timeout=0.5)
    finally:
        await nc.close()
    await wait_for(
        lambda: rmetric(router, "router_decide_total", outcome="reply_failed") == 1, 5, "count"
    )
    assert rmetric(router, "router_decide_total", outcome="ok") == 0
    assert "ROUTER_DECIDE_REPLY_FAILED" in codes(logs)


async def test_a_reply_that_must_wait_is_sent_from_a_task_holding_its_slot(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """The answer's publish is delayed 300 ms (the reply hands back an awaitable): the slot
    is held meanwhile, then the answer arrives ok, counted ok, and the slot is given back."""
    router = await make_router([nats_server.url], nats_fault_injection_enabled=True)
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH, Fault.delay(300))
    asking = asyncio.create_task(nats_decide(nats_server.url, body("waits")))
    await wait_for(lambda: router.decide.in_flight == 1, 5, "the decide in flight")
    answer = await asking
    assert answer["ok"] is True
    await wait_for(lambda: router.decide.in_flight == 0, 5, "the slot given back")
    assert rmetric(router, "router_decide_total", outcome="ok") == 1


async def test_an_overloaded_answer_that_must_wait_is_still_sent(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """No slot left and the answer's publish delayed: the overloaded answer still arrives,
    from a task of its own, and the slot count is untouched by it."""
    router, slow = await hold_the_only_slot(nats_server.url, make_router, 1500, 100)
    answer = await nats_decide(nats_server.url, body("refused"))
    assert answer["error"]["code"] == "overloaded"
    assert router.decide.in_flight == 1
    assert (await slow)["ok"] is True
    await wait_for(lambda: router.decide.in_flight == 0, 5, "the slot given back")


async def test_decides_answered_at_once_give_their_slots_back(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Five decides one after another with two slots: all answered ok, none in flight after."""
    router = await make_router([nats_server.url], decide_max_in_flight=2)
    assert await router.link.wait_connected(5)
    answers = [await nats_decide(nats_server.url, body(f"at-once-{i}")) for i in range(5)]
    assert [a["ok"] for a in answers] == [True] * 5
    assert router.decide.in_flight == 0


async def test_overloaded_answers_that_cannot_leave_are_bounded_by_the_slots(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """One slot held and every answer's publish delayed 1 s: of five overloaded requests at
    once, one answer waits in a task (as many as there are slots) and arrives; the other
    four are left unanswered at once, counted reply_failed and logged, with no task each."""
    router, slow = await hold_the_only_slot(nats_server.url, make_router, 3000, 1000)
    nc = await nats.connect(nats_server.url)
    try:
        asked = [
            asyncio.create_task(nc.request(SUBJECT, body(f"refused-{i}"), timeout=2.5))
            for i in range(5)
        ]
        await wait_for(
            lambda: rmetric(router, "router_decide_total", outcome="reply_failed") == 4,
            5,
            "four answers left unsent",
        )
        assert len(router.intake._tasks) == 2  # the slow push's and one overloaded answer's
        outcomes = await asyncio.gather(*asked, return_exceptions=True)
    finally:
        await nc.close()
    answered = [json.loads(o.data) for o in outcomes if not isinstance(o, BaseException)]
    assert [a["error"]["code"] for a in answered] == ["overloaded"]
    assert sum(isinstance(o, nats.errors.TimeoutError) for o in outcomes) == 4
    assert rmetric(router, "router_decide_total", outcome="overloaded") == 1
    failed = [e for e in logs if e.get("error_code") == "ROUTER_DECIDE_REPLY_FAILED"]
    assert (failed[0]["outcome"], failed[0]["reason"]) == ("dropped", "overloaded_answers_waiting")
    assert (await slow)["ok"] is True
