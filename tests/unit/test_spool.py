"""The SQLite spool (real SQLite files): the memory queue's rules, plus surviving a restart."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natsrouter.config import OverflowPolicy
from natsrouter.errors import ConfigError
from natsrouter.link.outcome import Operation
from natsrouter.link.pending import Admission, Limits, MemoryPendingQueue, PendingItem, PendingOp
from natsrouter.link.spool import SpoolError, SqlitePendingQueue

DROP = OverflowPolicy.DROP_OLDEST
LIMITS = Limits(100, 1_000_000, DROP)


def op(n: int, operation: Operation = Operation.PUBLISH_WITH_ACK) -> PendingOp:
    return PendingOp(operation, f"s.{n}", f"payload {n}".encode(), {"Nats-Msg-Id": f"id-{n}"})


def items(queue: SqlitePendingQueue | MemoryPendingQueue) -> list[PendingItem]:
    found, cursor = [], 0
    while (item := queue.oldest_after(cursor)) is not None:
        found.append(item)
        cursor = item.id
    return found


def test_items_survive_close_and_reopen_with_their_ids_and_headers(tmp_path: Path) -> None:
    """What was pushed is there after a reopen: same ids, order, headers, attempts."""
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, LIMITS)
    for n in range(3):
        queue.push(op(n), now=100.0 + n)
    queue.push(PendingOp(Operation.PUBLISH, "core", b"\x00\xff", None), now=103.0)
    queue.record_failure(2)
    assert queue.remove(1)
    queue.close()

    again = SqlitePendingQueue.open(path, LIMITS)
    assert again.recovered == again.count == 3
    assert again.size_bytes == sum(i.op.size for i in items(again))
    assert [(i.id, i.op, i.enqueued_at, i.attempts) for i in items(again)] == [
        (2, op(1), 101.0, 1),
        (3, op(2), 102.0, 0),
        (4, PendingOp(Operation.PUBLISH, "core", b"\x00\xff", None), 103.0, 0),
    ]
    again.close()


def test_ids_never_go_back_after_the_newest_items_are_removed(tmp_path: Path) -> None:
    """AUTOINCREMENT: a cursor from before a restart never skips a newer item."""
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, LIMITS)
    last = queue.push(op(0), now=0.0).item
    assert last is not None
    queue.remove(last.id)
    queue.close()
    again = SqlitePendingQueue.open(path, LIMITS)
    item = again.push(op(1), now=0.0).item
    assert item is not None
    assert item.id == last.id + 1
    again.close()


def test_drop_oldest_evicts_rows_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, Limits(2, 1_000_000, DROP))
    for n in range(3):
        result = queue.push(op(n), now=0.0)
    assert result.admission is Admission.EVICT_AND_STORE
    assert [e.op for e in result.evicted] == [op(0)]
    queue.close()
    again = SqlitePendingQueue.open(path, LIMITS)
    assert [i.op for i in items(again)] == [op(1), op(2)]
    again.close()


def test_expire_removes_old_rows(tmp_path: Path) -> None:
    queue = SqlitePendingQueue.open(tmp_path / "spool.db", LIMITS)
    for n in range(4):
        queue.push(op(n), now=float(n))
    expired = queue.expire(enqueued_before=2.0)
    assert [i.op for i in expired] == [op(0), op(1)]
    assert [i.op for i in items(queue)] == [op(2), op(3)]
    assert (queue.count, queue.size_bytes) == (2, op(2).size + op(3).size)
    queue.close()


def test_a_second_process_cannot_open_a_spool_in_use(tmp_path: Path) -> None:
    """The file is locked while open: another process gets a ConfigError naming the key."""
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, LIMITS)
    code = (
        "import sys\n"
        "from natsrouter.errors import ConfigError\n"
        "from natsrouter.link.spool import SqlitePendingQueue\n"
        "from natsrouter.link.pending import Limits\n"
        "from natsrouter.config import OverflowPolicy\n"
        "try:\n"
        f"    SqlitePendingQueue.open({str(path)!r}, Limits(1, 1, OverflowPolicy.DROP_OLDEST))\n"
        "except ConfigError as exc:\n"
        "    print(exc); sys.exit(3)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert other.returncode == 3, other.stderr
    assert other.stdout.strip() == f"nats_pending_spool_path: {path}: in use by another process"
    queue.close()
    # Released on close: it opens again.
    SqlitePendingQueue.open(path, LIMITS).close()


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda p: p.write_bytes(b"not a database, just text" * 100), "not a SQLite database"),
        (
            lambda p: (
                sqlite3.connect(p).execute("CREATE TABLE orders (id INTEGER)").connection.commit()
            ),
            "not a natsrouter spool (it holds other tables)",
        ),
    ],
)
def test_a_foreign_file_is_refused_and_left_as_it_was(
    tmp_path: Path, prepare: object, message: str
) -> None:
    path = tmp_path / "spool.db"
    prepare(path)  # type: ignore[operator]
    before = path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        SqlitePendingQueue.open(path, LIMITS)
    assert caught.value.key == "nats_pending_spool_path"
    assert message in str(caught.value)
    assert path.read_bytes() == before


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SqlitePendingQueue.open(tmp_path / "nope" / "spool.db", LIMITS)
    assert (
        str(caught.value)
        == f"nats_pending_spool_path: directory does not exist: {tmp_path / 'nope'}"
    )


def test_a_full_disk_raises_spool_error_and_keeps_count_and_rows(tmp_path: Path) -> None:
    """SQLITE_FULL (the file may not grow) on push: SpoolError, nothing half-written."""
    queue = SqlitePendingQueue.open(tmp_path / "spool.db", LIMITS)
    pages = queue._db.execute("PRAGMA page_count").fetchone()[0]
    queue._db.execute(f"PRAGMA max_page_count = {pages}")
    big = PendingOp(Operation.PUBLISH, "s", b"x" * 50_000)
    with pytest.raises(SpoolError, match="database or disk is full"):
        queue.push(big, now=0.0)
    assert (queue.count, queue.size_bytes, items(queue)) == (0, 0, [])
    queue.close()


# Model-based: whatever the script, the spool answers exactly as the memory queue does.
actions = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(min_value=1, max_value=60)),
        st.tuples(st.just("expire"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("remove"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("fail"), st.integers(min_value=0, max_value=20)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=40,
)
limits = st.builds(
    Limits,
    max_count=st.integers(min_value=0, max_value=6),
    max_bytes=st.integers(min_value=0, max_value=150),
    overflow=st.sampled_from(list(OverflowPolicy)),
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limits=limits, script=actions)
def test_spool_behaves_exactly_like_the_memory_queue(
    tmp_path_factory: pytest.TempPathFactory, limits: Limits, script: list[tuple[str, int]]
) -> None:
    path = tmp_path_factory.mktemp("spool") / "spool.db"
    memory = MemoryPendingQueue(limits)
    spool = SqlitePendingQueue.open(path, limits)
    try:
        for step, (action, arg) in enumerate(script):
            if action == "push":
                pending = PendingOp(Operation.PUBLISH, "s", b"x" * (arg - 1), {"k": str(step)})
                a, b = memory.push(pending, float(step)), spool.push(pending, float(step))
                assert (a.admission, a.item, a.evicted) == (b.admission, b.item, b.evicted)
            elif action == "expire":
                assert memory.expire(float(arg)) == spool.expire(float(arg))
            elif action == "reopen":
                spool.close()
                spool = SqlitePendingQueue.open(path, limits)
            else:
                held = items(memory)
                if held:
                    target = held[arg % len(held)].id
                    if action == "remove":
                        assert memory.remove(target) is spool.remove(target) is True
                    else:
                        memory.record_failure(target)
                        spool.record_failure(target)
            assert items(memory) == items(spool)
            assert (memory.count, memory.size_bytes) == (spool.count, spool.size_bytes)
    finally:
        spool.close()


def test_sent_items_are_deleted_in_batches(tmp_path: Path) -> None:
    """remove_later counts at once and hides the rows; the file loses them at flush."""
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, LIMITS)
    pushed = [queue.push(op(n), 1.0).item for n in range(3)]
    for item in pushed[:2]:
        assert item is not None
        queue.remove_later(item)
    assert (queue.count, [i.op.subject for i in queue.batch_after(0, 10)]) == (1, ["s.2"])
    queue.close()  # flushes
    reopened = SqlitePendingQueue.open(path, LIMITS)
    assert [i.op.subject for i in items(reopened)] == ["s.2"]
    reopened.close()


def test_a_crash_before_the_flush_leaves_the_batch_to_send_again(tmp_path: Path) -> None:
    """Sent but not flushed when the process dies: the rows are there at the next start."""
    path = tmp_path / "spool.db"
    queue = SqlitePendingQueue.open(path, LIMITS)
    pushed = [queue.push(op(n), 1.0).item for n in range(3)]
    for item in pushed:
        assert item is not None
        queue.remove_later(item)
    queue._db.close()  # the process dies: no flush
    reopened = SqlitePendingQueue.open(path, LIMITS)
    assert [i.op.headers for i in items(reopened)] == [{"Nats-Msg-Id": f"id-{n}"} for n in range(3)]
    reopened.close()
