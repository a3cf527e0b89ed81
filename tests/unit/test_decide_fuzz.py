"""The whole decide path and the consumers' parsers, fuzzed: typed answers, never a crash.

A real Router with a real (never started) link: no sockets, so an assignment is queued. Each
example must get one of the contract's statuses (never 500 ``internal``), a body whose
``ok`` agrees with it, and exactly one count in ``router_decide_total``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.link import Link
from natsrouter.observability.metrics import DECIDE_OUTCOMES, LinkMetrics, RouterMetrics
from natsrouter.routing.worker_messages import InvalidMessage, parse_exec_ack, parse_exec_result
from natsrouter.service.router import Router
from tests.conftest import TWO_PROVIDERS, write_policy

VALID: dict[str, Any] = {
    "version": "1",
    "request_id": "r",
    "tenant_id": "acme",
    "task": {"type": "t", "payload": {}},
    "push_assignment": True,
}
STATUS_OF = {
    "ok": 200,
    "invalid_request": 400,
    "unauthorized": 403,
    "policy_not_found": 404,
    "constraints_unsatisfiable": 422,
    "decision_failed": 503,
}


@pytest.fixture(scope="module")
def router() -> Iterator[tuple[Router, asyncio.AbstractEventLoop]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_policy(root, "acme", "default", TWO_PROVIDERS)
        values = {
            "nats_url": "nats://127.0.0.1:1",
            "policies_path": str(root),
            "allowed_tenants": "acme,globex",
            "nats_max_payload_size": 4096,
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


def total(router: Router) -> float:
    registry = router.link.metrics.registry
    return sum(
        registry.get_sample_value("router_decide_total", {"outcome": o}) or 0.0
        for o in DECIDE_OUTCOMES
    )


def check(router_loop: tuple[Router, asyncio.AbstractEventLoop], raw: bytes) -> int:
    router, loop = router_loop
    before = total(router)
    status, body = loop.run_until_complete(router.decide.handle(raw, None, "nats"))
    assert status in STATUS_OF.values()
    assert body["ok"] is (status == 200)
    if status != 200:
        assert STATUS_OF[body["error"]["code"]] == status
    json.dumps(body)  # always serialisable
    assert total(router) == before + 1
    return status


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
quiet = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@quiet
@given(st.binary(max_size=600))
def test_random_bytes_get_a_typed_answer(router: Any, raw: bytes) -> None:
    """Any bytes: invalid_request (or, by luck, a real answer), never internal."""
    check(router, raw)


@quiet
@given(
    st.sampled_from(
        sorted({*VALID, "metadata", "constraints", "policy_id", "trace_id", "assignment_subject"})
    ),
    json_values,
)
def test_mutated_requests_get_a_typed_answer(router: Any, key: str, value: Any) -> None:
    """A valid request with one field replaced by any JSON value."""
    check(router, json.dumps({**VALID, key: value}).encode())


@quiet
@given(st.text(min_size=1, max_size=256), st.text(min_size=1, max_size=256))
def test_any_tenant_and_policy_strings(router: Any, tenant: str, policy_id: str) -> None:
    """Unknown tenants are unauthorized, unknown policies policy_not_found, never a crash."""
    status = check(
        router, json.dumps({**VALID, "tenant_id": tenant, "policy_id": policy_id}).encode()
    )
    if tenant not in ("acme", "globex") and not any(ord(c) < 32 or ord(c) == 127 for c in tenant):
        assert status == 403


def test_huge_strings_are_refused_by_size(router: Any) -> None:
    """A request over nats_max_payload_size is invalid_request before it is parsed."""
    assert check(router, json.dumps({**VALID, "request_id": "x" * 10_000}).encode()) == 400


@quiet
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_consumer_parsers_raise_only_invalid_message(router: Any, raw: bytes) -> None:
    """Whatever a worker sends, the consumers' parsers answer with InvalidMessage or a value."""
    for parse in (parse_exec_ack, parse_exec_result):
        try:
            parse(raw, None, 4096)
        except InvalidMessage as err:
            assert err.field
