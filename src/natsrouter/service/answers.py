"""A decide's answer: its status and counted outcome, and its JSON written from its fields.

Every decide is answered once and counted by outcome; most are answered over NATS, where the
answer's bytes are all that is needed. So a decision is written as JSON straight from its
fields (``ok_json``, ``pushed_json``: equal to ``strict_json.dumps`` of the document,
tests/unit/test_answer_json.py) and the document itself is built only when the HTTP
transport asks for it. ``service.decide`` makes answers; the intakes send and count them.
"""

from __future__ import annotations

from typing import Any

from natsrouter.routing.decider import REASON_TEXT, Decision
from natsrouter.routing.strict_json import dumps as _dumps
from natsrouter.routing.strict_json import dumps_value, escape_json_text
from natsrouter.service.assignments import Pushed


class Answer:
    """An answer, counted by ``outcome``; ``started`` is when its request was received.

    A decision is written as JSON straight from its fields (``encoded``, equal to
    ``dumps(body)``: tests/unit/test_answer_json.py), with its push when it has one, and its
    ``body`` document is built only when asked for (the HTTP transport): over NATS the
    document and the encoder's walk of it were about a tenth of the Router's time per decide.
    """

    __slots__ = ("_body", "_decided", "_pushed", "outcome", "started", "status")

    def __init__(
        self,
        status: int,
        body: dict[str, Any] | None,
        outcome: str,
        started: float,
        decided: tuple[Decision, str, str] | None = None,
        pushed: Pushed | None = None,
    ) -> None:
        self.status = status
        self._body = body
        self.outcome = outcome
        self.started = started
        #: (decision, request_id, trace_id) of a decision, body unbuilt; and its push.
        self._decided = decided
        self._pushed = pushed

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            assert self._decided is not None  # one of the two is always given
            self._body = ok_body(*self._decided, self._pushed)
        return self._body

    def encoded(self) -> bytes:
        """The body as JSON (``strict_json.dumps``)."""
        if self._decided is not None:
            try:
                if self._pushed is None:
                    return ok_json(*self._decided)
                return pushed_json(*self._decided, self._pushed)
            except TypeError:  # a name that is not a string (written here as strings)
                pass
        return _dumps(self.body)

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.outcome!r}, {self.body!r})"


def ok_body(
    decision: Decision, request_id: str, trace_id: str, pushed: Pushed | None = None
) -> dict[str, Any]:
    """The DecideResponse of a decision, and of its push when it has one."""
    decided = decision.to_dict()
    body: dict[str, Any] = {
        "ok": True,
        "decision": decided,
        "context": {"request_id": request_id, "trace_id": trace_id},
    }
    if pushed is not None:
        decided["assignment_id"] = pushed.assignment_id
        body["assignment"] = pushed.to_dict()
    return body


#: Each reason as JSON text, written once.
_REASON_JSON = {reason: dumps_value(text) for reason, text in REASON_TEXT.items()}


def _decision_fields(decision: Decision) -> str:
    """The decision object's members as ``dumps`` writes them (same keys, same order), without
    its braces: the answer with a push adds its ``assignment_id`` after them."""
    v, text = dumps_value, escape_json_text  # the ids and names are strings by type
    provider_id, reason, policy_id, priority, latency, cost, fallback_used, _ = decision
    # The common values written without a call; any other goes through dumps_value.
    return (
        f'"provider_id":{text(provider_id)},'
        f'"priority":{int.__repr__(priority) if type(priority) is int else v(priority)},'
        f'"expected_latency_ms":{"null" if latency is None else v(latency)},'
        f'"expected_cost":{"null" if cost is None else v(cost)},'
        f'"reason":{_REASON_JSON[reason]},"policy_id":{text(policy_id)},'
        f'"fallback_used":{"false" if fallback_used is False else v(fallback_used)}'
    )


def ok_json(decision: Decision, request_id: str, trace_id: str) -> bytes:
    """``dumps(ok_body(...))`` without a push, written from the fields (same keys, same order)."""
    text = escape_json_text
    return (
        f'{{"ok":true,"decision":{{{_decision_fields(decision)}}},'
        f'"context":{{"request_id":{text(request_id)},"trace_id":{text(trace_id)}}}}}'
    ).encode()


def pushed_json(decision: Decision, request_id: str, trace_id: str, pushed: Pushed) -> bytes:
    """``dumps(ok_body(..., pushed))``, written from the fields like ``ok_json``: the
    decision gains its ``assignment_id``, the answer its ``assignment`` (``Pushed.to_dict``)."""
    v, text = dumps_value, escape_json_text
    assignment_id = pushed.assignment_id
    outcome, ack, pending_id, why, _ = pushed.result
    assignment = (
        f'{{"assignment_id":{text(assignment_id)},"subject":{text(pushed.subject)},'
        f'"outcome":{text(outcome)}'  # a StrEnum member is its text: no .value
    )
    if ack is not None:
        seq = ack.seq
        assignment += (
            f',"stream":{text(ack.stream)},'
            f'"seq":{int.__repr__(seq) if type(seq) is int else v(seq)}'
        )
    if pending_id is not None:
        assignment += f',"pending_id":{v(pending_id)}'
    if why is not None:
        assignment += f',"reason":{text(why)}'
    return (
        f'{{"ok":true,"decision":{{{_decision_fields(decision)},'
        f'"assignment_id":{text(assignment_id)}}},'
        f'"context":{{"request_id":{text(request_id)},"trace_id":{text(trace_id)}}},'
        f'"assignment":{assignment}}}}}'
    ).encode()
