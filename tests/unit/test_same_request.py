"""A repeat is the same request exactly when its JSON values are, locally as across Routers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.messages import Constraints, DecideRequest, Task
from natsrouter.service.remembered import asked, same_asked
from natsrouter.service.shared_state import fingerprint


def _asked(payload: Any = None, metadata: Any = None, max_cost: Any = None) -> tuple[Any, ...]:
    request = DecideRequest("r-1", "acme", Task("text", None, payload), constraints=Constraints())
    if metadata is not None:
        request = request._replace(metadata=metadata)
    if max_cost is not None:
        request = request._replace(constraints=Constraints(None, max_cost))
    return asked(request)


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ({"n": 1}, {"n": True}),
        ({"n": 0}, {"n": False}),
        ({"n": 1}, {"n": 1.0}),
        ({"n": 0.0}, {"n": -0.0}),
        ([1, {"k": [True]}], [1, {"k": [1]}]),
    ],
    ids=["1-true", "0-false", "1-1.0", "0.0--0.0", "nested"],
)
def test_values_python_finds_equal_but_json_tells_apart_are_another_request(
    first: Any, again: Any
) -> None:
    """Payloads equal under == but written differently in JSON: not the same request."""
    assert _asked(first) == _asked(again)
    assert not same_asked(_asked(first), _asked(again))
    assert not same_asked(_asked(metadata={"m": first}), _asked(metadata={"m": again}))


def test_a_limit_of_1_and_one_of_1_0_are_another_request() -> None:
    """max_cost 1 then 1.0: not the same request (as the fingerprint says)."""
    assert not same_asked(_asked(max_cost=1), _asked(max_cost=1.0))


def test_no_metadata_and_empty_metadata_are_the_same_request() -> None:
    """A request built without metadata (a read-only {}) is the same as one with {}."""
    assert same_asked(_asked(), _asked(metadata={}))
    assert same_asked(_asked(metadata={}), _asked())


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.sampled_from([0, 1, 0.0, -0.0, 1.0, 1e16, 10**16, 2.5])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=1500)
@given(_JSON, _JSON)
def test_the_same_request_locally_exactly_when_the_fingerprints_agree(
    first: Any, again: Any
) -> None:
    """Any two JSON payloads: same_asked agrees with the shared-state fingerprint."""
    one, two = _asked(first), _asked(again)
    assert same_asked(one, two) == (fingerprint(one) == fingerprint(two))
