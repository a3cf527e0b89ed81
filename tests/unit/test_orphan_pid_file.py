"""An embedded server's pid file naming no single process is ignored, never signalled."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from natsrouter import embedded


@pytest.mark.parametrize("pid", [0, -1])
def test_a_pid_file_naming_a_process_group_signals_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: int
) -> None:
    """pid 0 (our group) or -1 (every process), the port answering its name: no signal sent."""
    pid_file = tmp_path / "nats-server.pid"
    pid_file.write_text(json.dumps({"pid": pid, "server_name": "n-1"}))
    sent: list[tuple[int, int]] = []

    def kill(target: int, sig: int) -> None:
        sent.append((target, sig))
        if sig != 0:
            raise ProcessLookupError  # recorded, never delivered

    monkeypatch.setattr(embedded.os, "kill", kill)
    monkeypatch.setattr(embedded, "_read_info", lambda *_: {"server_name": "n-1"})
    assert embedded.stop_orphan(pid_file, "127.0.0.1", 4222) is None
    assert [s for s in sent if s[1] in (signal.SIGTERM, signal.SIGKILL)] == []
