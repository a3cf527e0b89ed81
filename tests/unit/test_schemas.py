"""The compiled validator and the reference (jsonschema) agree on every shipped schema."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.schemas import Schema, validator

SCHEMAS = {
    name: validator("natsrouter.routing", name)
    for name in (
        "decide_request.schema.json",
        "exec_ack.schema.json",
        "exec_result.schema.json",
        "policy.schema.json",
    )
}
SEEDS: dict[str, dict[str, Any]] = {
    "decide_request.schema.json": {
        "version": "1",
        "request_id": "r",
        "tenant_id": "t",
        "task": {"type": "x", "payload": 1},
        "constraints": {"max_latency_ms": 5},
        "assignment_subject": "a.b",
        "metadata": {},
    },
    "exec_ack.schema.json": {"assignment_id": "a", "status": "accepted", "tenant_id": "t"},
    "exec_result.schema.json": {
        "assignment_id": "a",
        "status": "success",
        "provider_id": "p",
        "tenant_id": "t",
        "latency_ms": 1,
        "cost": 0,
        "timestamp": 5,
        "job": {"type": "x"},
    },
    "policy.schema.json": {
        "providers": [{"name": "a", "weight": 1}],
        "sticky": {"enabled": True, "ttl_seconds": 5},
        "fallbacks": [{"when": {"k": ["v", 1]}, "to": "a"}],
    },
}
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(-1, 1e3, allow_nan=False)
    | st.sampled_from(["", "1", "a.b", "$JS.X", "_INBOX.x", "a b", "a.*", "success", "x" * 300])
    # A lone surrogate, and a character beyond the BMP (a pair in JSON): the compiled
    # validator's patterns must treat them as the reference does.
    | st.sampled_from(["a\ud800", "\udfff.b", "\U0001f600"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "payload", "name", "weight", "enabled", "k"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def agree(schema: Schema, document: Any) -> None:
    reference = schema.reference.is_valid(document)
    assert schema.fast_valid(document) is reference, json.dumps(document)[:300]
    assert (schema.error(document) is None) is reference


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(SCHEMAS)), st.data())
def test_mutated_documents_are_judged_alike(name: str, data: st.DataObject) -> None:
    """A valid seed with one field replaced, removed or added: same verdict from both."""
    seed = dict(SEEDS[name])
    key = data.draw(st.sampled_from([*sorted(seed), "extra"]))
    if data.draw(st.booleans()):
        seed.pop(key, None)
    else:
        seed[key] = data.draw(values)
    agree(SCHEMAS[name], seed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(SCHEMAS)), values)
def test_random_values_are_judged_alike(name: str, document: Any) -> None:
    """Any JSON value at all: same verdict from both."""
    agree(SCHEMAS[name], document)


def test_seeds_are_valid() -> None:
    """The seeds of the property tests are valid documents."""
    for name, seed in SEEDS.items():
        assert SCHEMAS[name].error(seed) is None, name
