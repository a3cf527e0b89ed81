"""A decide tokens file that changes after the settings were checked stops start-up cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from natsrouter.cli import EXIT_CONFIG, serve
from natsrouter.config import build_settings
from tests.conftest import FAST


@pytest.mark.parametrize("spool", [True, False], ids=["spool-set", "spool-default"])
async def test_a_tokens_file_broken_after_the_check_exits_2_naming_it(
    tmp_path: Path, logs: list[Any], spool: bool
) -> None:
    """Valid when checked, broken when the Router starts: exit 2 with the key, no traceback."""
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\ntoken = "{"t" * 32}"\ntenants = ["acme"]\n')
    (tmp_path / "policies").mkdir()
    settings = build_settings(
        {
            **FAST,
            "nats_url": "nats://127.0.0.1:1",
            "policies_path": str(tmp_path / "policies"),
            **({"nats_pending_spool_path": str(tmp_path / "spool")} if spool else {}),
            "decide_tokens_file": str(tokens),
        }
    )
    tokens.write_text("not toml [")
    assert await serve(settings) == EXIT_CONFIG
    errors = [e for e in logs if e.get("event") == "configuration error"]
    assert [e["key"] for e in errors] == ["decide_tokens_file"]
