"""The one place where nats-py (and socket) exceptions become ``errors.LinkError`` subclasses.

Every part of the real transport (``nats_transport``, ``nats_jetstream``) raises what
``translate`` makes of a nats-py exception, so the rest of natsrouter matches on the error
tree, never on nats-py's classes or its message text.
"""

from __future__ import annotations

import asyncio
import ssl

import nats.errors
import nats.js.errors

from natsrouter.errors import (
    AuthenticationError,
    ConnectionClosedError,
    LinkError,
    NoRespondersError,
    OperationTimeoutError,
    OtherLinkError,
    ServerError,
    ServerUnavailableError,
)


def translate(exc: BaseException) -> LinkError:
    """Map a nats-py (or socket) exception to the error tree; the only place that does."""
    if isinstance(exc, LinkError):
        return exc
    message = str(exc) or type(exc).__name__
    # nats-py reports an auth rejection during connect as a plain Error carrying the
    # server's -ERR text; there is no dedicated class to match on in that path.
    lowered = message.lower()
    if isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in lowered
        or "authentication" in lowered
        or "user authentication expired" in lowered
    ):
        return AuthenticationError(message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # The server's identity could not be verified: an authentication failure, not a
        # network one (it will not pass by itself).
        return AuthenticationError(message)
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return NoRespondersError(message)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | nats.errors.TimeoutError):
        return OperationTimeoutError(message)
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.StaleConnectionError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.NoServersError
        | nats.errors.ConnectionDrainingError
        | nats.errors.OutboundBufferLimitError
        | OSError
        | EOFError,
    ):
        return ConnectionClosedError(message)
    if isinstance(exc, nats.js.errors.APIError):
        # JetStream's own answer: its status and err_code say whether it can pass
        # (errors.PERMANENT_JS_ERR_CODES). No status at all is read as a 503, JetStream's
        # "not now".
        status = exc.code or 503
        cls = ServerUnavailableError if status == 503 else ServerError
        return cls(message, status=status, err_code=exc.err_code)
    if isinstance(exc, nats.errors.Error):
        return ServerError(message) if message.startswith("nats: ") else OtherLinkError(message)
    return OtherLinkError(f"{type(exc).__name__}: {message}")
