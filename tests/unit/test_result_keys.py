"""ExecResult keys: one named by its request never shares a key with one named by an assignment."""

from __future__ import annotations

import json

from natsrouter.routing.worker_messages import parse_exec_result

LIMIT = 1 << 20


def _result(**ids: str) -> bytes:
    return json.dumps(
        {"status": "success", "provider_id": "p", "tenant_id": "acme", **ids}
    ).encode()


def test_request_id_x_and_assignment_id_x_have_distinct_keys() -> None:
    """Same tenant, request_id X and assignment_id X: two dedup keys and two usage ids."""
    by_request = parse_exec_result(_result(request_id="X"), None, LIMIT)
    by_assignment = parse_exec_result(_result(assignment_id="X"), None, LIMIT)
    assert (by_request.idempotency_key != by_assignment.idempotency_key) is True
    assert (by_request.usage_msg_id, by_assignment.usage_msg_id) == (
        "usage-r-4:acme:X",
        "usage-4:acme:X",
    )


def test_a_result_with_both_ids_is_keyed_by_its_assignment() -> None:
    """assignment_id wins when both are present: the usage id is unchanged from before."""
    both = parse_exec_result(_result(assignment_id="A", request_id="R"), None, LIMIT)
    assert both.usage_msg_id == "usage-4:acme:A"
