"""The decide path over shared state: one answer per request and one provider per session
across Router processes (``shared_state_enabled``).

``first_answer`` decides a request this process has not answered and agrees the answer with
the other Routers through ``ROUTER_DECIDES``; ``sticky_decide`` keeps a session on the
provider every Router knows (``ROUTER_STICKY``). The buckets and their failures are
``service.shared_state``'s.
"""

from __future__ import annotations

import math
import uuid

from natsrouter.routing.decider import Decider, Decision, DecisionReason
from natsrouter.routing.messages import DecideRequest, ErrorCode, RequestError
from natsrouter.service.remembered import Remembered, asked
from natsrouter.service.shared_state import SharedDecide, SharedState, fingerprint

#: Refusals that come from this Router's state, not from what was asked: its breakers
#: (``decision_failed``), its estimates (``constraints_unsatisfiable``: the same request met
#: the constraints where it was answered) and its bucket (``rate_limit_exceeded``). A repeat
#: refused so is answered from ``ROUTER_DECIDES``: its job was assigned, and an error would
#: send a client that only retried after a timeout to resubmit under a new request id (a
#: second job). The others (``policy_not_found``, ...) keep their error.
_NOT_THE_REQUESTS = frozenset(
    {
        ErrorCode.DECISION_FAILED,
        ErrorCode.CONSTRAINTS_UNSATISFIABLE,
        ErrorCode.RATE_LIMIT_EXCEEDED,
    }
)


async def first_answer(
    shared: SharedState, decider: Decider, request: DecideRequest, size: int
) -> Remembered:
    """The answer to a request this process has not answered yet, agreed with the others.

    Decides (sticking to the shared session provider), then claims the request id with the
    decision and a fresh assignment id: when another Router claimed it first, its decision
    and assignment id are the answer (a replay), and the rate-limit token this decide took
    goes back. When the decide fails for a reason the request did not cause
    (``_NOT_THE_REQUESTS``), a request another Router answered still gets that answer.
    Raises ``RequestError`` when the id was claimed for a different request. Without shared
    state, the local decision stands.
    """
    try:
        decision = await sticky_decide(shared, decider, request)
    except RequestError as err:
        stored = await _stored_answer(shared, decider, request, err)
        if stored is None:
            raise
        return _replay(shared, request, size, stored, fingerprint(asked(request)))
    mine = SharedDecide(fingerprint(asked(request)), decision, str(uuid.uuid4()))
    held = await shared.claim_decide(request.tenant_id, request.request_id, mine)
    if held is None or held is mine:
        return Remembered(asked(request), mine.decision, size, assignment_id=mine.assignment_id)
    # Another Router answered first: this is a repeat, and a repeat takes no token.
    policy = decider.policies.get(request.tenant_id, request.policy_id)
    if policy is not None:
        decider.rate_limits.give_back(policy.tenant_id, policy.policy_id, policy.rate_limit)
    return _replay(shared, request, size, held, mine.asked)


async def _stored_answer(
    shared: SharedState, decider: Decider, request: DecideRequest, err: RequestError
) -> SharedDecide | None:
    """The answer stored for a request whose decide failed with ``err``, when ``err`` is not
    the request's doing and a look-up is allowed now; None otherwise.

    Only a failed decide pays this read, never one that passes, and failed decides read at
    most at the policy's look-up rate (``RateLimits.may_look_up``): a flood of them is not
    a flood of reads.
    """
    if err.code not in _NOT_THE_REQUESTS:
        return None
    policy = decider.policies.get(request.tenant_id, request.policy_id)
    if policy is None:
        return None
    limits, config = decider.rate_limits, policy.rate_limit
    if not limits.may_look_up(policy.tenant_id, policy.policy_id, config):
        return None
    stored = await shared.stored_decide(request.tenant_id, request.request_id)
    if stored is not None and err.code is not ErrorCode.RATE_LIMIT_EXCEEDED:
        # The decide took its token before it found nobody to pick; a repeat takes none.
        limits.give_back(policy.tenant_id, policy.policy_id, config)
    return stored


def _replay(
    shared: SharedState, request: DecideRequest, size: int, held: SharedDecide, mine: str
) -> Remembered:
    """The stored answer, when it was given to the same request (fingerprint ``mine``)."""
    if held.asked != mine:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"request_id {request.request_id!r} was used for a different request "
            "within idempotency_ttl_seconds",
            {"field": "request_id"},
        )
    shared.replayed()
    return Remembered(asked(request), held.decision, size, assignment_id=held.assignment_id)


async def sticky_decide(shared: SharedState, decider: Decider, request: DecideRequest) -> Decision:
    """Decide, with the session's provider as every Router knows it.

    The shared provider is put in the local session table first, so the decider sticks to it
    when it is usable. A new session, or one whose provider had to change, is then claimed;
    when another Router's live choice came first, the answer sticks to that one when it is
    usable here.
    """
    sticky = decider.session_of(request)
    if sticky is None:
        return decider.decide(request)
    session, ttl_seconds = sticky
    held = await shared.sticky_get(session)
    if held is not None:
        # Never beyond the policy's TTL: a stored end from a clock that runs ahead would
        # otherwise keep the session here for as long as that clock is ahead.
        decider.sticky.put(session, held.provider, math.ceil(min(held.seconds_left, ttl_seconds)))
    decision = decider.decide(request)
    if decision.reason is DecisionReason.FALLBACK:
        return decision  # a fallback rule's provider is not the session's
    if held is not None and decision.provider_id == held.provider:
        return decision
    won = await shared.sticky_claim(session, decision.provider_id, ttl_seconds, held)
    if won is None or won.provider == decision.provider_id:
        return decision
    decider.sticky.put(session, won.provider, math.ceil(min(won.seconds_left, ttl_seconds)))
    return decider.stick_to(request, won.provider) or decision
