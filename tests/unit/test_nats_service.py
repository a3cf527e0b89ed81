"""The $SRV.STATS counts of the decide endpoint: NATS decides only, errors by outcome."""

from __future__ import annotations

from natsrouter.service.nats_service import EndpointCounts


def test_counts_only_nats_decides_and_their_errors() -> None:
    """HTTP decides are ignored; a non-ok outcome is an error and becomes last_error."""
    counts = EndpointCounts()
    counts.record("ok", "nats", 0.002)
    counts.record("invalid_request", "nats", 0.001)
    counts.record("internal", "http", 0.5)
    counts.record("ok", "nats", 0.003)
    assert (counts.num_requests, counts.num_errors, counts.last_error) == (3, 1, "invalid_request")
    assert counts.processing_time_ns == 6_000_000
    assert counts.average_processing_time_ns == 2_000_000


def test_average_is_zero_before_any_request() -> None:
    """No request yet: the average is 0, not a division by zero."""
    assert EndpointCounts().average_processing_time_ns == 0
