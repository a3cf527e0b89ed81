"""The one error tree of natsrouter.

Every failure a caller can see is one of these classes; nats-py's exceptions are translated
into them at a single boundary (``link.nats_errors.translate``), so no caller matches on
message text. Each class says whether retrying can help (``retriable``) and carries the
bounded ``reason`` used as a metric label (CONTRACT §3)::

    NatsRouterError
    ├── ConfigError                 bad configuration; names the key (never retriable)
    └── LinkError                   an operation on NATS failed; has ``reason``
        ├── NotConnectedError       reason=not_connected      retriable
        ├── ConnectionClosedError   reason=connection_closed  retriable
        ├── OperationTimeoutError   reason=timeout            retriable
        ├── NoRespondersError       reason=no_responders
        ├── ServerError             reason=server_error       retriable for a JetStream
        │   │                                                  answer that can pass (see
        │   │                                                  ``jetstream_refusal_passes``)
        │   └── ServerUnavailableError  reason=server_error  a JetStream 503
        ├── AuthenticationError     reason=auth               (retrying the same credential
        │                                                      will not help; the link still
        │                                                      backs off and retries, since
        │                                                      servers can be reconfigured)
        └── OtherLinkError          reason=other

An injected fault raises the class of the reason it names, with ``injected=True``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """Bounded values of the ``reason`` metric label and log field."""

    NOT_CONNECTED = "not_connected"
    TIMEOUT = "timeout"
    CONNECTION_CLOSED = "connection_closed"
    NO_RESPONDERS = "no_responders"
    SERVER_ERROR = "server_error"
    AUTH = "auth"
    QUEUE_FULL = "queue_full"
    EXPIRED = "expired"
    SPOOL_ERROR = "spool_error"
    FAULT_INJECTED = "fault_injected"
    #: A reply that could not be sent at once: replies are never queued (the requester
    #: gave up long before a replay could deliver it).
    REPLY_DROPPED = "reply_dropped"
    OTHER = "other"


class NatsRouterError(Exception):
    """Base of every natsrouter error."""

    #: A class default; a ``ServerError`` sets its own from the JetStream error code.
    retriable: bool = False


class ConfigError(NatsRouterError):
    """A configuration key has a bad value, or is unknown."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class LinkError(NatsRouterError):
    """An operation on the NATS link failed."""

    default_reason: ClassVar[Reason] = Reason.OTHER
    #: True when the connection itself is gone: the link treats the failure as a loss.
    connection_lost: ClassVar[bool] = False

    def __init__(
        self, message: str = "", *, reason: Reason | None = None, injected: bool = False
    ) -> None:
        self.reason: Reason = reason or self.default_reason
        super().__init__(message or self.reason.value)
        self.injected = injected


class NotConnectedError(LinkError):
    """There is no connection to NATS right now."""

    retriable = True
    default_reason = Reason.NOT_CONNECTED


class ConnectionClosedError(LinkError):
    """The connection closed (or was refused) while the operation needed it."""

    retriable = True
    default_reason = Reason.CONNECTION_CLOSED
    connection_lost = True


class OperationTimeoutError(LinkError):
    """No answer within the deadline. For a JetStream publish the outcome is unknown."""

    retriable = True
    default_reason = Reason.TIMEOUT


class NoRespondersError(LinkError):
    """Nobody listens on the subject (for JetStream: no stream captures it)."""

    default_reason = Reason.NO_RESPONDERS


class ServerError(LinkError):
    """The server (or JetStream API) answered with an error.

    ``status`` and ``err_code`` are JetStream's (``code`` and ``err_code`` of its API error),
    None for a refusal that is not a JetStream answer (the client's own checks, an injected
    fault): those are never retried. A JetStream answer is retriable unless its code is one
    retrying cannot fix (``PERMANENT_JS_ERR_CODES``).
    """

    default_reason = Reason.SERVER_ERROR

    def __init__(
        self,
        message: str = "",
        *,
        reason: Reason | None = None,
        injected: bool = False,
        status: int | None = None,
        err_code: int | None = None,
    ) -> None:
        super().__init__(message, reason=reason, injected=injected)
        self.status = status
        self.err_code = err_code
        self.retriable = status is not None and jetstream_refusal_passes(err_code)


#: JetStream error codes (nats-server's errors.json) that no retry can fix: the message
#: itself, or an expectation it carries, is refused by the stream as configured. Any other
#: JetStream error can pass and keeps the message queued: 10008 (JetStream temporarily
#: unavailable), 10077 (storing failed: maximum messages, bytes or messages per subject on a
#: discard-new stream, which consumers drain), 10023/10028/10047 (insufficient resources),
#: 10118 (stream offline), 10163, 10167 (too many requests), 10158 (a duplicate in process).
PERMANENT_JS_ERR_CODES = frozenset(
    {
        10054,  # message size exceeds maximum allowed (max_msg_size, max_payload)
        10097,  # header size exceeds maximum allowed
        10060,  # expected stream does not match (Nats-Expected-Stream)
        10070,  # wrong last msg ID (Nats-Expected-Last-Msg-Id)
        10071,  # wrong last sequence (Nats-Expected-Last-Sequence)
        10164,  # wrong last sequence
        10193,  # missing sequence for expected last sequence per subject
        10109,  # invalid operation on sealed stream
        10165,  # invalid per-message TTL
        10166,  # per-message TTL is disabled
        10168,  # message counters disabled
        10169,  # message counter increment missing
        10170,  # message counter has payload
        10171,  # message counter increment invalid
        10172,  # message counter broken
    }
)


def jetstream_refusal_passes(err_code: int | None) -> bool:
    """True when a JetStream error with ``err_code`` can pass if the publish is tried again.

    An answer without an error code (a bare status) is taken to pass: only the codes known
    to be permanent end a publish ``failed``.
    """
    return err_code not in PERMANENT_JS_ERR_CODES


class ServerUnavailableError(ServerError):
    """JetStream answered 503: it cannot take the message now, and may later.

    A stream full under ``discard: new`` ("maximum messages exceeded"), a server short of
    storage ("insufficient resources"), JetStream not ready: each passes once a consumer
    catches up or the operator acts, so a queued message is kept, not ended as poison.
    """

    retriable = True


class AuthenticationError(LinkError):
    """The server rejected the credentials."""

    default_reason = Reason.AUTH


class OtherLinkError(LinkError):
    """A failure that fits no other class."""

    default_reason = Reason.OTHER


_BY_REASON: dict[Reason, type[LinkError]] = {
    Reason.NOT_CONNECTED: NotConnectedError,
    Reason.CONNECTION_CLOSED: ConnectionClosedError,
    Reason.TIMEOUT: OperationTimeoutError,
    Reason.NO_RESPONDERS: NoRespondersError,
    Reason.SERVER_ERROR: ServerError,
    Reason.AUTH: AuthenticationError,
}


def error_for_reason(reason: Reason, message: str = "", *, injected: bool = False) -> LinkError:
    """Build the error class that stands for ``reason`` (used by fault injection)."""
    cls = _BY_REASON.get(reason, OtherLinkError)
    return cls(message, reason=reason, injected=injected)
