"""Imports go one way: the link uses observability, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

_SRC = Path(__file__).resolve().parents[2] / "src" / "natsrouter"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_observability_imports_nothing_from_the_link() -> None:
    """No module under observability/ imports natsrouter.link."""
    offenders = {
        path.name: sorted(m for m in _imports(path) if m.startswith("natsrouter.link"))
        for path in (_SRC / "observability").glob("*.py")
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}
