"""What an operation on the link returns: one typed outcome, never "an error and queued"."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from natsrouter.errors import LinkError, Reason
from natsrouter.operation import Operation

__all__ = ["Operation", "Outcome", "PubAck", "Result"]


class Outcome(StrEnum):
    #: Handed to the server (for JetStream: stored, with the PubAck in ``pub_ack``).
    SENT = "sent"
    #: Kept in the pending queue, to be replayed on reconnect (``pending_id``).
    QUEUED = "queued"
    #: Not kept: the queue could not hold it under ``drop_oldest``.
    DROPPED = "dropped"
    #: Not kept: the queue is full under ``reject_new`` (back-pressure to the caller).
    REJECTED = "rejected"
    #: Not sent and not kept because the link is in fail-open mode.
    FAILED_OPEN = "failed_open"
    #: The server refused it for a reason retrying cannot fix (``error`` says which).
    FAILED = "failed"


# Immutable value types are NamedTuples: built on every operation, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs several times more.


class PubAck(NamedTuple):
    """The JetStream server's acknowledgement of a stored message."""

    stream: str
    seq: int
    duplicate: bool = False


class Result(NamedTuple):
    outcome: Outcome
    pub_ack: PubAck | None = None
    pending_id: int | None = None
    reason: Reason | None = None
    error: LinkError | None = None

    @property
    def ok(self) -> bool:
        """True when the operation is sent or safely kept for later."""
        return self.outcome in (Outcome.SENT, Outcome.QUEUED)
