"""The one boundary that turns nats-py exceptions into the error tree."""

from __future__ import annotations

import ssl

import nats.errors
import nats.js.errors
import pytest

from natsrouter.errors import LinkError, Reason, error_for_reason
from natsrouter.link.nats_errors import translate


@pytest.mark.parametrize(
    ("exc", "reason", "retriable"),
    [
        (nats.errors.TimeoutError(), Reason.TIMEOUT, True),
        (TimeoutError(), Reason.TIMEOUT, True),
        (nats.errors.NoRespondersError(), Reason.NO_RESPONDERS, False),
        (nats.js.errors.NoStreamResponseError(), Reason.NO_RESPONDERS, False),
        (nats.errors.ConnectionClosedError(), Reason.CONNECTION_CLOSED, True),
        (nats.errors.StaleConnectionError(), Reason.CONNECTION_CLOSED, True),
        (ConnectionRefusedError(111, "refused"), Reason.CONNECTION_CLOSED, True),
        (nats.errors.AuthorizationError(), Reason.AUTH, False),
        (nats.errors.Error("nats: 'Authorization Violation'"), Reason.AUTH, False),
        (nats.js.errors.APIError(code=503, description="x"), Reason.SERVER_ERROR, True),
        (nats.js.errors.APIError(code=503, err_code=10008), Reason.SERVER_ERROR, True),
        (nats.js.errors.APIError(code=503, err_code=10077), Reason.SERVER_ERROR, True),
        (nats.js.errors.APIError(code=503, err_code=10023), Reason.SERVER_ERROR, True),
        (nats.js.errors.APIError(code=400, err_code=10054), Reason.SERVER_ERROR, False),
        (nats.js.errors.APIError(code=400, err_code=10071), Reason.SERVER_ERROR, False),
        (nats.errors.MaxPayloadError(), Reason.SERVER_ERROR, False),
        (nats.js.errors.ServiceUnavailableError(code=503), Reason.SERVER_ERROR, True),
        (nats.js.errors.BadRequestError(code=400, err_code=10054), Reason.SERVER_ERROR, False),
        # A 500 without a permanent code (stream offline, a cluster between leaders) can pass.
        (nats.js.errors.APIError(code=500, description="x"), Reason.SERVER_ERROR, True),
        (nats.js.errors.APIError(code=500, err_code=10118), Reason.SERVER_ERROR, True),
        (nats.errors.Error("nats: 'Maximum Payload Violation'"), Reason.SERVER_ERROR, False),
        (ssl.SSLCertVerificationError("certificate verify failed"), Reason.AUTH, False),
        (ValueError("odd"), Reason.OTHER, False),
    ],
)
def test_translate(exc: BaseException, reason: Reason, retriable: bool) -> None:
    """Each nats-py failure maps to one reason and retriability."""
    err = translate(exc)
    assert isinstance(err, LinkError)
    assert (err.reason, err.retriable) == (reason, retriable)


@pytest.mark.parametrize("reason", list(Reason))
def test_error_for_reason_keeps_the_reason(reason: Reason) -> None:
    """An injected error carries exactly the reason it was asked for."""
    err = error_for_reason(reason, injected=True)
    assert (err.reason, err.injected) == (reason, True)


def test_a_jetstream_error_carries_its_status_and_code() -> None:
    """The JetStream status and err_code survive the translation."""
    err = translate(nats.js.errors.APIError(code=503, err_code=10077, description="full"))
    assert (getattr(err, "status", None), getattr(err, "err_code", None)) == (503, 10077)
