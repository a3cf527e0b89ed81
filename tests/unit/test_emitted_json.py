"""Every message the Router emits is standard JSON, whatever its input: fuzzed.

A real Router with a real, never started, link: each assignment, usage event and dead letter
it publishes waits in the pending queue, where the test reads it. Inputs carry NaN,
infinities, huge integers and floats (as a lenient encoder writes them), lone surrogates,
deep and wide documents. Every decide answer, error reply, ExecAssignment and UsageEvent must
parse with a strict parser (no NaN, no infinities); a dead letter must be the consumed bytes
unchanged; every header value must encode as UTF-8 and contain no CR or LF.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.link import Link
from natsrouter.link.transport import JsMessage, JsMetadata
from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.routing.strict_json import dumps
from natsrouter.service.router import Router
from tests.conftest import write_policy

POLICY: dict[str, Any] = {
    "providers": [
        {"name": "a", "weight": 1, "expected_latency_ms": 10, "expected_cost": 0.5},
        {"name": "b", "weight": 1},
    ],
    "sticky": {"enabled": True},
    "fallbacks": [{"when": {"task.type": "slow"}, "to": "b", "retry": 2}],
}
RouterLoop = tuple[Router, asyncio.AbstractEventLoop]


@pytest.fixture(scope="module")
def router() -> Iterator[RouterLoop]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_policy(root, "acme", "default", POLICY)
        values = {
            "nats_url": "nats://127.0.0.1:1",
            "policies_path": str(root),
            "nats_max_payload_size": 8192,
            "nats_max_pending_operations": 100_000,
            "nats_max_pending_bytes": 1 << 30,
        }
        settings_ = build_settings(values)
        registry = CollectorRegistry()
        link = Link(settings_, LinkMetrics(registry))
        router = Router(settings_, link, RouterMetrics(registry))
        router.load_policies()
        loop = asyncio.new_event_loop()
        try:
            yield router, loop
        finally:
            loop.close()


def _refuse_constant(name: str) -> Any:
    raise AssertionError(f"{name} in an emitted message")


def strict(raw: bytes) -> Any:
    """The strictest standard parser: NaN and infinities raise."""
    return json.loads(raw, parse_constant=_refuse_constant)


def emitted(router: Router) -> list[tuple[str, bytes, dict[str, str]]]:
    """Take everything the link holds for sending: (subject, payload, headers)."""
    pending = router.link.pending
    out = []
    while (item := pending.oldest_after(0)) is not None:
        out.append((item.op.subject, item.op.payload, dict(item.op.headers or {})))
        pending.remove(item.id)
    return out


def check_headers(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        assert "\r" not in value and "\n" not in value, name
        value.encode()  # UTF-8, as the link writes it: no lone surrogate


# Numbers as a lenient encoder writes them: NaN, Infinity, 1e400-like floats, huge ints.
numbers = st.floats() | st.integers() | st.integers(min_value=2**63, max_value=2**70)
# Any characters, lone surrogates too (a client's "\ud800"), which st.text() leaves out.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
values = st.recursive(
    st.none() | st.booleans() | numbers | any_text,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=8), inner)
    ),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {
        "version": st.just("1"),
        "request_id": any_text.filter(bool),
        "tenant_id": st.sampled_from(["acme", "acme", "other"]),
        "trace_id": st.sampled_from(["t-1", "t\ud800"]),
        "task": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "slow"]), "payload": values}
        ),
        "push_assignment": st.booleans(),
        "constraints": st.fixed_dictionaries({}, optional={"max_cost": numbers}),
        "metadata": st.dictionaries(st.sampled_from(["session_id", "k"]), values, max_size=2),
    }
)
results = st.fixed_dictionaries(
    {
        "assignment_id": any_text.filter(bool),
        "status": st.sampled_from(["success", "error", "cancelled"]),
        "provider_id": st.sampled_from(["a", "b"]),
        "tenant_id": st.sampled_from(["acme", "acme\r\nx", "acme\udfff"]),
    },
    optional={"latency_ms": numbers, "cost": numbers, "timestamp": numbers, "job": values},
)
fuzz = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def lenient(document: Any) -> bytes:
    """What a careless client writes: NaN and Infinity as bare words."""
    return json.dumps(document).encode()


@fuzz
# Up to the delivery before the last (js_max_deliver = 5): the dead letter of a last
# delivery waits until it is stored, which this never-connected link never does (its
# headers are those of any dead letter; tests/integration/test_router_consumers.py).
@given(requests, results, st.integers(min_value=1, max_value=4))
def test_every_emitted_message_is_standard_json(
    router: RouterLoop, request: dict[str, Any], result: dict[str, Any], delivered: int
) -> None:
    """Decide answers, error replies, assignments, usage events: strict JSON; DLQ: verbatim."""
    service, loop = router
    raw_request = lenient(request)
    _, body = loop.run_until_complete(service.decide.handle(raw_request, None, "nats"))
    strict(dumps(body))
    raw_result = lenient(result)
    meta = JsMetadata("ROUTER_RESULTS", "router-results", 7, 7, delivered, 0)
    message = JsMessage("caf.exec.result.v1", raw_result, None, "$JS.ACK.x", meta)
    loop.run_until_complete(service.results(message))
    for subject, payload, headers in emitted(service):
        check_headers(headers)
        if subject.endswith(".dlq"):
            assert payload == raw_result
        else:
            strict(payload)


def test_a_nan_result_never_reaches_the_estimates_or_the_answers(router: RouterLoop) -> None:
    """The issue's case: a NaN/Infinity result is dead-lettered; decide answers stay finite."""
    service, loop = router
    bad = b'{"assignment_id":"x","status":"success","provider_id":"a","tenant_id":"acme",'
    bad += b'"latency_ms":NaN,"cost":Infinity}'
    meta = JsMetadata("ROUTER_RESULTS", "router-results", 9, 9, 1, 0)
    loop.run_until_complete(
        service.results(JsMessage("caf.exec.result.v1", bad, None, "$JS.ACK.y", meta))
    )
    sent = emitted(service)
    assert [(s, p, h["dlq_reason"]) for s, p, h in sent] == [
        ("caf.exec.result.v1.dlq", bad, "invalid")
    ]
    # An id no fuzzed request can have used: a repeat of one with other fields is refused.
    request = {"version": "1", "request_id": f"nan-{uuid.uuid4()}", "tenant_id": "acme"}
    request["task"] = {"type": "text", "payload": {}}
    _, body = loop.run_until_complete(service.decide.handle(lenient(request), None, "http"))
    assert strict(dumps(body))["decision"]["expected_cost"] in (0.5, None)
