"""Property tests: whatever happens to it, the pending queue keeps its bounds and its order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.config import OverflowPolicy
from natsrouter.link.outcome import Operation
from natsrouter.link.pending import Admission, Limits, MemoryPendingQueue, PendingOp

# An action: ("push", size) | ("expire", cut) | ("remove", index) | ("fail", index)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(min_value=1, max_value=60)),
        st.tuples(st.just("expire"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("remove"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("fail"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=80,
)
limits = st.builds(
    Limits,
    max_count=st.integers(min_value=0, max_value=8),
    max_bytes=st.integers(min_value=0, max_value=200),
    overflow=st.sampled_from(list(OverflowPolicy)),
)


def walk(queue: MemoryPendingQueue) -> list[int]:
    ids, cursor = [], 0
    while (item := queue.oldest_after(cursor)) is not None:
        ids.append(item.id)
        cursor = item.id
    return ids


@settings(max_examples=300, deadline=None)
@given(limits=limits, script=actions)
def test_bounds_order_and_conservation_hold(limits: Limits, script: list[tuple[str, int]]) -> None:
    """Count and bytes stay within bounds and equal the items held; order is acceptance order;
    every pushed item is held, evicted, expired, removed, or was refused (never lost)."""
    queue = MemoryPendingQueue(limits)
    pushed = held_out = 0
    for step, (action, arg) in enumerate(script):
        if action == "push":
            op = PendingOp(Operation.PUBLISH, "s", b"x" * (arg - 1))
            result = queue.push(op, now=float(step))
            pushed += 1
            held_out += len(result.evicted)
            if result.admission in (Admission.DROP, Admission.REJECT):
                held_out += 1
                assert result.item is None
        elif action == "expire":
            held_out += len(queue.expire(enqueued_before=float(arg)))
        else:
            ids = walk(queue)
            if ids:
                target = ids[arg % len(ids)]
                if action == "remove":
                    assert queue.remove(target)
                    held_out += 1
                else:
                    queue.record_failure(target)
        ids = walk(queue)
        assert ids == sorted(ids)
        assert queue.count == len(ids) <= max(limits.max_count, 0)
        held = [queue.oldest_after(i - 1) for i in ids]
        assert queue.size_bytes == sum(item.op.size for item in held if item) <= limits.max_bytes
    assert pushed == queue.count + held_out
