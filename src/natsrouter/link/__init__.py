"""The resilient NATS link (see link.py)."""

from natsrouter.link.accounting import Accounting
from natsrouter.link.faults import Fault, FaultKind, FaultTarget
from natsrouter.link.link import Link
from natsrouter.link.outcome import Operation, Outcome, PubAck, Result
from natsrouter.link.state import ConnectionState
from natsrouter.link.transport import ConsumerSpec, InboundMessage, JsMessage

__all__ = [
    "Accounting",
    "ConnectionState",
    "ConsumerSpec",
    "Fault",
    "FaultKind",
    "FaultTarget",
    "InboundMessage",
    "JsMessage",
    "Link",
    "Operation",
    "Outcome",
    "PubAck",
    "Result",
]
