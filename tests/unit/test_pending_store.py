"""Where the pending queue lives: `natsrouter run` spools by default, the library keeps memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsrouter.config import DEFAULT_SPOOL_PATH, PendingStore, build_settings, load_settings
from natsrouter.errors import ConfigError
from natsrouter.link.pending import MemoryPendingQueue
from natsrouter.link.spool import SqlitePendingQueue, open_pending_queue


def test_the_library_default_is_memory() -> None:
    """No store and no path: a Link built from these settings queues in memory."""
    settings = build_settings({})
    assert (settings.nats_pending_store, settings.nats_pending_spool_path) == (
        PendingStore.AUTO,
        "",
    )
    assert isinstance(open_pending_queue(settings), MemoryPendingQueue)


def test_natsrouter_run_turns_auto_into_the_default_spool() -> None:
    """`durable_by_default` (what `natsrouter run` applies) picks data/spool.db."""
    settings = build_settings({}).durable_by_default()
    assert (settings.nats_pending_store, settings.nats_pending_spool_path) == (
        PendingStore.SPOOL,
        DEFAULT_SPOOL_PATH,
    )


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"nats_pending_store": "memory"}, ""),
        ({"nats_pending_spool_path": "/var/lib/x/spool.db"}, "/var/lib/x/spool.db"),
        (
            {"nats_pending_store": "spool", "nats_pending_spool_path": "/srv/q.db"},
            "/srv/q.db",
        ),
    ],
)
def test_an_explicit_choice_is_kept_by_natsrouter_run(values: dict[str, str], path: str) -> None:
    """Memory chosen stays memory; a path set stays that path."""
    assert build_settings(values).durable_by_default().nats_pending_spool_path == path


def test_spool_without_a_path_uses_the_default_path() -> None:
    """`nats_pending_store = "spool"` alone means data/spool.db, in the library too."""
    assert build_settings({"nats_pending_store": "spool"}).nats_pending_spool_path == (
        DEFAULT_SPOOL_PATH
    )


def test_memory_with_a_spool_path_is_refused_naming_the_key() -> None:
    """Two contradicting choices: a configuration error on nats_pending_store."""
    with pytest.raises(ConfigError) as caught:
        build_settings({"nats_pending_store": "memory", "nats_pending_spool_path": "/q.db"})
    assert caught.value.key == "nats_pending_store"


def test_an_unknown_store_is_refused_naming_the_key() -> None:
    """A typo in the value names the key and the allowed values."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"ROUTER_NATS_PENDING_STORE": "disk"})
    assert caught.value.key == "nats_pending_store"
    assert "auto, spool, memory" in str(caught.value)


def test_the_default_spool_directory_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data/ is made where the process runs, as the embedded server makes data/nats."""
    monkeypatch.chdir(tmp_path)
    queue = open_pending_queue(build_settings({"nats_pending_store": "spool"}))
    try:
        assert isinstance(queue, SqlitePendingQueue)
        assert (tmp_path / DEFAULT_SPOOL_PATH).is_file()
    finally:
        queue.close()


def test_a_named_directory_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    """A path the operator set is not created: a typo in it stops start-up."""
    settings = build_settings({"nats_pending_spool_path": str(tmp_path / "nope" / "q.db")})
    with pytest.raises(ConfigError) as caught:
        open_pending_queue(settings)
    assert caught.value.key == "nats_pending_spool_path"
