"""Paths that had no test: an internal error answers and the Router keeps serving; an
assignment not sent nor kept still answers 200 with its outcome and logs why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.routing.decider import Decision
from natsrouter.routing.messages import DecideRequest
from tests.conftest import RouterFactory
from tests.helpers.observe import codes, rmetric
from tests.helpers.waiting import wait_for
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration


async def test_an_unexpected_error_answers_internal_and_the_router_keeps_serving(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """A bug in deciding: 500 internal (HTTP) and internal (NATS), traceback logged, then 200s."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    real_decide = router.decider.decide

    def buggy(request: DecideRequest) -> Decision:
        if request.request_id.startswith("bug"):
            raise ZeroDivisionError("a bug")
        return real_decide(request)

    router.decider.decide = buggy  # type: ignore[method-assign]
    status, answer = await http_decide(
        router.http.port, json.dumps(decide_request(request_id="bug-1")).encode()
    )
    assert (status, answer["error"], answer["context"]["request_id"]) == (
        500,
        {"code": "internal", "message": "internal error"},
        "bug-1",
    )
    answer = await nats_decide(
        nats_server.url, json.dumps(decide_request(request_id="bug-2")).encode()
    )
    assert answer["error"]["code"] == "internal"
    errors = [e for e in logs if e.get("error_code") == "ROUTER_INTERNAL_ERROR"]
    assert [(e["where"], e["request_id"], "ZeroDivisionError" in e["error"]) for e in errors] == [
        ("decide", "bug-1", True),
        ("decide", "bug-2", True),
    ]
    status, answer = await http_decide(router.http.port, json.dumps(decide_request()).encode())
    assert (status, answer["ok"]) == (200, True)
    assert (await nats_decide(nats_server.url, json.dumps(decide_request()).encode()))["ok"]
    assert rmetric(router, "router_decide_total", outcome="internal") == 2
    assert rmetric(router, "router_decide_total", outcome="ok") == 2


@pytest.mark.parametrize(
    ("overrides", "outcome", "reason"),
    [
        ({"nats_max_pending_operations": 0}, "dropped", "queue_full"),
        ({"nats_fail_open_mode": True}, "failed_open", "not_connected"),
        (
            {"nats_pending_overflow": "reject_new", "nats_max_pending_operations": 0},
            "rejected",
            "queue_full",
        ),
    ],
)
async def test_an_assignment_not_kept_while_nats_is_down_answers_200_with_its_outcome(
    tmp_path: Path,
    make_router: RouterFactory,
    logs: list[dict[str, Any]],
    overrides: dict[str, Any],
    outcome: str,
    reason: str,
) -> None:
    """NATS down and nothing may be queued: 200, the decision, the outcome, NOT_SENT logged."""
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    try:
        router = await make_router([server.url], **overrides)
        assert await router.link.wait_connected(5)
    finally:
        server.kill()
    await wait_for(lambda: router.link.state.value != "connected", 5, "the loss to be seen")
    body = json.dumps(decide_request(push_assignment=True)).encode()
    status, answer = await http_decide(router.http.port, body)
    assert status == 200
    assert answer["decision"]["provider_id"] in {"a", "b"}
    assert (answer["assignment"]["outcome"], answer["assignment"]["reason"]) == (outcome, reason)
    assert answer["decision"]["assignment_id"] == answer["assignment"]["assignment_id"]
    not_sent = [e for e in logs if e.get("error_code") == "ROUTER_ASSIGNMENT_NOT_SENT"]
    assert [(e["outcome"], e["reason"], e["subject"]) for e in not_sent] == [
        (outcome, reason, "caf.exec.assign.v1")
    ]
    assert rmetric(router, "router_assignments_total", outcome=outcome) == 1


async def test_an_assignment_the_server_refuses_answers_200_with_outcome_failed(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """No stream holds the subject: 200, outcome failed, ROUTER_ASSIGNMENT_NOT_SENT."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    body = decide_request(push_assignment=True, assignment_subject="caf.exec.assign.v1.nowhere")
    status, answer = await http_decide(router.http.port, json.dumps(body).encode())
    assert (status, answer["ok"], answer["assignment"]["outcome"]) == (200, True, "failed")
    assert "ROUTER_ASSIGNMENT_NOT_SENT" in codes(logs)
    assert rmetric(router, "router_assignments_total", outcome="failed") == 1
