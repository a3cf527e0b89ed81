"""Logging, configured once at the edge: one JSON object per line on stderr (CONTRACT §4).

Every line has ``ts`` (ISO 8601 UTC), ``level``, ``message``, ``logger``; link events add
``error_code`` and the fields of the contract. nats-py's own stdlib logging goes through the
same pipeline. Credentials never reach the output: ``redact`` masks URL userinfo anywhere in
a value and every field whose name says it holds a secret, and the rendered line is scrubbed
of every configured secret value (a password or token quoted in a foreign error message).

A request aiohttp cannot parse is the client's fault, yet aiohttp logs it at ERROR with a
traceback, so any client could flood the error log: ``MalformedRequests`` turns each into one
WARN line without a traceback, at most one per ``MALFORMED_LOG_INTERVAL_S``, the next line
counting the ones left out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, TextIO
from urllib.parse import quote

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from natsrouter.config import LogFormat, LogLevel

_SECRET_KEYS = re.compile(r"pass(word)?|token|secret|seed|nkey|creds|credential|auth_key", re.I)
# `scheme://userinfo@`: userinfo runs to the LAST `@` before a space, since a password may
# hold `@`, `:` or `/` itself. Found in one pass by hand: the regex
# `[a-z][a-z0-9+.-]*://\S*@` backtracks over every start in a long run of letters, so a
# 1 MB request_id in a log line held the event loop for hours.
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_SCHEME_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_SPACE = re.compile(r"\s")
_MASK = "***"
# Shorter secret values are not masked by value: masking every "ab" would garble the log.
MIN_MASKED_SECRET = 4
_LEVEL_NAMES = {"warning": "WARN", "critical": "ERROR", "exception": "ERROR"}


def mask_userinfo(text: str) -> str:
    """``scheme://userinfo@`` -> ``scheme://***@`` anywhere in ``text``, in linear time."""
    at = text.find("://")
    if at == -1:
        return text
    out: list[str] = []
    done = 0  # text[:done] is settled
    while at != -1:
        start = at
        while start > done and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        while start < at and text[start] not in _SCHEME_FIRST:
            start += 1
        space = _SPACE.search(text, at + 3)
        end = space.start() if space else len(text)
        last_at = text.rfind("@", at + 3, end)
        if start == at or last_at == -1:
            # No scheme, or no `@` before the space: no later `://` before it has one either
            # (a scheme holds no space), so go on from the space.
            at = text.find("://", at + 3 if start == at else end)
            continue
        out += [text[done:start], text[start : at + 3], _MASK, "@"]
        done = last_at + 1
        at = text.find("://", done)
    out.append(text[done:])
    return "".join(out)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_userinfo(value)
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        # A plain tuple: a NamedTuple cannot be built from one iterable (the line was lost);
        # either is a JSON array.
        return tuple(_redact_value(v) for v in value)
    if isinstance(value, dict):
        return {
            k: (_MASK if _SECRET_KEYS.search(str(k)) else _redact_value(v))
            for k, v in value.items()
        }
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every field."""
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = _MASK
        else:
            event[key] = _redact_value(value)
    return event


def scrubber(secrets: Iterable[str]) -> Callable[[Any, str, Any], Any]:
    """A last processor: replace each secret value in the rendered line with ``***``.

    Each secret is looked for as written, JSON-escaped and percent-encoded, the forms in
    which a line can carry it.
    """
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) >= MIN_MASKED_SECRET:
            forms |= {secret, json.dumps(secret)[1:-1], quote(secret, safe="")}
    # Longest first, so a secret containing another is masked whole.
    pattern = (
        re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
        if forms
        else None
    )

    def scrub(_: Any, __: str, line: Any) -> Any:
        if pattern is None or not isinstance(line, str):
            return line
        return pattern.sub(_MASK, line)

    return scrub


#: At most one malformed-request line per this many seconds; the rest are counted.
MALFORMED_LOG_INTERVAL_S = 10.0
_REASON_CHARS = 120


class RateLimit:
    """At most one line per ``interval_s``; the next line allowed says how many were not."""

    def __init__(
        self,
        interval_s: float = MALFORMED_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next_at: float | None = None
        self._suppressed = 0

    def allow(self) -> int | None:
        """None: leave this line out. Else the count left out since the last line."""
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self._suppressed += 1
            return None
        self._next_at = now + self._interval_s
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class MalformedRequests(logging.Filter):
    """On aiohttp's server logger: a client's unparsable request becomes one WARN line."""

    def __init__(
        self,
        level: int = logging.INFO,
        interval_s: float = MALFORMED_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._level = level
        self._limit = RateLimit(interval_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError) or exc.code >= 500:
            # Not the client's fault: aiohttp's line stands, at the configured level.
            return record.levelno >= self._level
        suppressed = self._limit.allow()
        if suppressed is None:
            return False
        # Only the first line of the parser's message: the rest quotes the client's bytes.
        reason = (str(exc.message).strip().splitlines() or [type(exc).__name__])[0]
        get_logger("natsrouter.http").warning(
            "malformed HTTP request",
            error_code="ROUTER_HTTP_REQUEST_MALFORMED",
            remote=str(record.args[0]) if isinstance(record.args, tuple) and record.args else None,
            status=exc.code or 400,
            reason=reason[:_REASON_CHARS],
            suppressed=suppressed,
        )
        return False


def _contract_level(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    level = str(event.get("level", "info")).lower()
    event["level"] = _LEVEL_NAMES.get(level, level.upper())
    return event


def _stringify_exc(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Exceptions passed as field values (e.g. error=exc) are rendered as text, not repr noise.
    for key, value in list(event.items()):
        if isinstance(value, BaseException):
            event[key] = f"{type(value).__name__}: {value}"
    return event


def configure_logging(
    level: LogLevel = LogLevel.INFO,
    fmt: LogFormat = LogFormat.JSON,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Route structlog and stdlib logging (nats-py, aiohttp) through one renderer.

    ``secrets`` are values (passwords, tokens) masked wherever they appear in a line.
    """
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _stringify_exc,
    ]
    renderer: Any
    if fmt is LogFormat.JSON:
        renderer = structlog.processors.JSONRenderer()
        final: list[Any] = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            _contract_level,
            redact,
            renderer,
            scrubber(secrets),
        ]
    else:
        final = [redact, structlog.dev.ConsoleRenderer(colors=False), scrubber(secrets)]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.value.upper())
    server = logging.getLogger("aiohttp.server")
    for old in [f for f in server.filters if isinstance(f, MalformedRequests)]:
        server.removeFilter(old)
    # aiohttp logs some malformed requests (a bad method) at DEBUG: the logger lets every
    # record reach the filter, which decides.
    server.setLevel(logging.DEBUG)
    server.addFilter(MalformedRequests(level=root.level))
    # aiohttp's access log is one line per scrape: noise at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    """A structlog logger whose ``logger`` field is ``name``."""
    return structlog.stdlib.get_logger(name)
