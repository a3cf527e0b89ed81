"""natsrouter run leaves its start-up heap out of later collections, garbage collected first."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from natsrouter.cli import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfreeze")
def test_live_objects_are_frozen_and_startup_garbage_is_collected() -> None:
    """A live table is frozen, a cycle dropped before the freeze is freed, not frozen."""
    live = {"table": [1, 2, 3]}
    garbage = _Node()
    dropped = weakref.ref(garbage)
    del garbage
    freeze_startup_heap()
    assert dropped() is None
    assert gc.get_freeze_count() > 0
    assert not any(o is live for o in gc.get_objects())
