"""JSON log lines: the contract's fields, and no credential ever printed."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import structlog
from aiohttp.http_exceptions import BadHttpMessage
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.config import LogLevel
from natsrouter.link.outcome import PubAck
from natsrouter.observability.logging import (
    MalformedRequests,
    configure_logging,
    get_logger,
    mask_userinfo,
)
from natsrouter.routing.messages import Constraints


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging(LogLevel.DEBUG, stream=out)
    try:
        yield out
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_line_has_ts_level_message_logger(stream: io.StringIO) -> None:
    """An event line carries ts (UTC ISO 8601), level, message, logger and its fields."""
    get_logger("natsrouter.link").warning(
        "connection attempt failed",
        error_code="NATS_CONNECTION_FAILED",
        reason="timeout",
        server="nats://127.0.0.1:4222",
        attempt=2,
    )
    [line] = lines(stream)
    assert line["level"] == "WARN"
    assert line["message"] == "connection attempt failed"
    assert line["logger"] == "natsrouter.link"
    assert line["error_code"] == "NATS_CONNECTION_FAILED"
    assert (line["reason"], line["attempt"]) == ("timeout", 2)
    ts = datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00"))
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_nats_py_stdlib_logs_are_json_too(stream: io.StringIO) -> None:
    """A stdlib record (as nats-py writes) comes out as the same JSON shape."""
    logging.getLogger("nats.aio.client").error("nats: encountered error")
    [line] = lines(stream)
    assert (line["logger"], line["level"], line["message"]) == (
        "nats.aio.client",
        "ERROR",
        "nats: encountered error",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"server": "nats://alice:s3cr3t-pw@10.0.0.1:4222"},
        {"servers": ["nats://tok-s3cr3t-pw@h:1", "nats://h2:2"]},
        {"nats_password": "s3cr3t-pw"},
        {"password": "s3cr3t-pw"},
        {"token": "s3cr3t-pw"},
        {"nkey_seed": "s3cr3t-pw"},
        {"context": {"auth_token": "s3cr3t-pw"}},
        {"error": "connect to nats://u:s3cr3t-pw@h:4222 failed"},
    ],
)
def test_credentials_never_printed(stream: io.StringIO, fields: dict[str, object]) -> None:
    """Passwords, tokens, seeds and URL userinfo are masked in any field."""
    get_logger("natsrouter.test").info("event", **fields)
    out = stream.getvalue()
    assert "s3cr3t-pw" not in out
    assert "***" in out


def test_credentials_in_stdlib_messages_are_masked(stream: io.StringIO) -> None:
    """A URL with userinfo inside a foreign log message is masked."""
    logging.getLogger("nats.aio.client").warning("reconnecting to nats://bob:s3cr3t-pw@h:4222")
    assert "s3cr3t-pw" not in stream.getvalue()
    assert "nats://***@h:4222" in stream.getvalue()


def test_a_url_password_holding_at_signs_is_masked_whole(stream: io.StringIO) -> None:
    """Userinfo runs to the last @: no piece of a password holding @, : or / is printed."""
    get_logger("natsrouter.test").info("event", error="to nats://u:Zq8@vT3:/kR5@h:4222 failed")
    out = stream.getvalue()
    assert [piece for piece in ("Zq8", "vT3", "kR5") if piece in out] == []
    assert "nats://***@h:4222 failed" in out


def test_configured_secret_values_are_masked_in_any_form() -> None:
    """A secret value is masked raw, JSON-escaped and percent-encoded, in any message."""
    out = io.StringIO()
    secret = 'Pw"7@x/%y'
    configure_logging(LogLevel.DEBUG, stream=out, secrets=[secret, "ab"])
    try:
        get_logger("natsrouter.test").info("event", note=f"server said {secret}")
        logging.getLogger("nats.aio.client").error("auth with Pw%227%40x%2F%25y refused")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    assert [line["note" if "note" in line else "message"] for line in lines(out)] == [
        "server said ***",
        "auth with *** refused",
    ]
    assert "Pw" not in text


def _aiohttp_record(exc: BaseException) -> logging.LogRecord:
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("10.1.2.3",),
        (type(exc), exc, None),
    )
    return record


def test_malformed_requests_are_one_warn_line_per_interval() -> None:
    """A client's unparsable request: one WARN line, no traceback; the next within 10 s counted."""
    out = io.StringIO()
    configure_logging(LogLevel.INFO, stream=out)
    now = [100.0]
    gate = MalformedRequests(level=logging.INFO, interval_s=10.0, clock=lambda: now[0])
    bad = BadHttpMessage("Invalid character in Content-Length:\n\n    b'Content-Length: abc'")
    try:
        shown = [gate.filter(_aiohttp_record(bad)) for _ in range(5)]
        now[0] += 10.0
        gate.filter(_aiohttp_record(bad))
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert shown == [False] * 5  # aiohttp's own line never goes out
    assert [
        (line["level"], line["error_code"], line["remote"], line["reason"], line["suppressed"])
        for line in lines(out)
    ] == [
        (
            "WARN",
            "ROUTER_HTTP_REQUEST_MALFORMED",
            "10.1.2.3",
            "Invalid character in Content-Length:",
            0,
        ),
        (
            "WARN",
            "ROUTER_HTTP_REQUEST_MALFORMED",
            "10.1.2.3",
            "Invalid character in Content-Length:",
            4,
        ),
    ]
    assert "Traceback" not in out.getvalue()


def test_server_errors_keep_aiohttp_line() -> None:
    """An error that is not the client's (a bug: 500) passes through with its traceback."""
    gate = MalformedRequests(level=logging.INFO)
    assert gate.filter(_aiohttp_record(RuntimeError("bug"))) is True


# The masking as first written (a regex): the reference the one-pass masking must equal.
_REFERENCE_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)\S*@", re.I)


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="aZ1+.-:/@ \tx", max_size=40))
def test_url_userinfo_is_masked_as_the_reference_regex_masks_it(text: str) -> None:
    """Any text: the same result as the regex ``scheme://...@`` -> ``scheme://***@``."""
    assert mask_userinfo(text) == _REFERENCE_USERINFO.sub(r"\g<scheme>***@", text)


@pytest.mark.parametrize(
    "value",
    ["t" * 1_000_000, "a://" * 250_000, "x:/" * 300_000, "a://b@" + "t" * 1_000_000],
)
def test_a_megabyte_value_is_logged_in_linear_time(stream: io.StringIO, value: str) -> None:
    """A 1 MB field (a client's request_id) is masked in one pass, not the seconds to hours
    a backtracking regex takes over a long run of letters; the Router's loop waits on it."""
    started = time.perf_counter()
    get_logger("natsrouter.router").warning("refused", error=value)
    assert time.perf_counter() - started < 2.0
    [line] = lines(stream)
    assert line["error"] == (value if "@" not in value else "a://***@" + "t" * 1_000_000)


def test_a_named_tuple_field_is_logged_as_its_values(stream: io.StringIO) -> None:
    """A NamedTuple (a request's constraints, a PubAck) is a JSON array, its URLs masked."""
    get_logger("natsrouter.router").info(
        "asked", limits=Constraints(100, None), ack=PubAck("nats://u:secret@h", 7)
    )
    [line] = lines(stream)
    assert (line["limits"], line["ack"]) == ([100, None], ["nats://***@h", 7, False])
