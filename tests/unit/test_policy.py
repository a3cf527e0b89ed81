"""Policy files: the shipped schema, errors naming file and field, and safe reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from natsrouter.routing.breaker import BreakerConfig
from natsrouter.routing.policy import (
    Fallback,
    PolicyError,
    PolicyStore,
    Provider,
    Sticky,
    load_policies,
)

GOOD: dict[str, Any] = {
    "providers": [{"name": "openai", "weight": 70}, {"name": "anthropic", "weight": 30}],
    "fallbacks": [{"when": {"task.type": ["image", "audio"]}, "to": "local", "retry": 1}],
    "sticky": {"enabled": True, "session_key": "session_id", "ttl_seconds": 600},
    "circuit_breaker": {
        "enabled": True,
        "failure_threshold": 3,
        "success_threshold": 2,
        "timeout_ms": 5000,
        "half_open_max_calls": 1,
    },
}


def write(root: Path, tenant: str, policy_id: str, document: Any) -> Path:
    path = root / tenant / f"{policy_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_a_good_file_becomes_a_policy(tmp_path: Path) -> None:
    """Every section is read into the model; tenant and id come from the path."""
    write(tmp_path, "acme", "default", GOOD)
    policy = load_policies(tmp_path)[("acme", "default")]
    assert policy.providers == (Provider("openai", 70.0), Provider("anthropic", 30.0))
    assert policy.fallbacks == (Fallback({"task.type": ("image", "audio")}, "local", 1),)
    assert policy.sticky == Sticky(True, "session_id", 600)
    assert policy.circuit_breaker == BreakerConfig(True, 3, 2, 5000, 1)


def test_defaults_for_optional_sections(tmp_path: Path) -> None:
    """Only providers is required; sticky and breaker default to disabled."""
    write(tmp_path, "acme", "minimal", {"providers": [{"name": "p", "weight": 1}]})
    policy = load_policies(tmp_path)[("acme", "minimal")]
    assert (policy.fallbacks, policy.sticky.enabled, policy.circuit_breaker.enabled) == (
        (),
        False,
        False,
    )


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"providers": [{"name": "p", "weight": 101}]}, "providers[0].weight"),
        (
            {"providers": [{"name": "p", "weight": 1}, {"name": "", "weight": 1}]},
            "providers[1].name",
        ),
        ({"providers": []}, "providers"),
        ({}, "(document)"),
        ({"providers": [{"name": "p", "weight": 1}], "extra": 1}, "(document)"),
        ({**GOOD, "sticky": {"enabled": "yes"}}, "sticky.enabled"),
        ({**GOOD, "fallbacks": [{"when": {}, "to": "x"}]}, "fallbacks[0].when"),
        (
            {**GOOD, "circuit_breaker": {"enabled": True, "timeout_ms": 0}},
            "circuit_breaker.timeout_ms",
        ),
        (
            {"providers": [{"name": "p", "weight": 1}, {"name": "p", "weight": 2}]},
            "providers[1].name",
        ),
        ("{not json", "(document)"),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path: Path, document: Any, field: str) -> None:
    """Each invalid file raises PolicyError with its path and the offending field."""
    path = write(tmp_path, "acme", "bad", document)
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    assert (info.value.path, info.value.field) == (path, field)
    assert str(info.value).startswith(f"{path}: {field}: ")


def test_a_bad_reload_keeps_the_last_valid_set(tmp_path: Path) -> None:
    """reload() with one bad file raises and leaves the previous policies in force."""
    write(tmp_path, "acme", "default", GOOD)
    store = PolicyStore(tmp_path)
    assert store.reload() == 1
    write(tmp_path, "acme", "default", {"providers": [{"name": "only", "weight": 1}]})
    write(tmp_path, "globex", "default", {"providers": "oops"})
    with pytest.raises(PolicyError):
        store.reload()
    kept = store.get("acme")
    assert kept is not None
    assert [p.name for p in kept.providers] == ["openai", "anthropic"]
    assert store.get("globex") is None


def test_files_must_sit_at_tenant_depth(tmp_path: Path) -> None:
    """A policy file outside <tenant>/<id>.json is refused."""
    (tmp_path / "stray.json").write_text(json.dumps(GOOD))
    with pytest.raises(PolicyError, match=r"expected <tenant>/<policy_id>\.json"):
        load_policies(tmp_path)


@pytest.mark.parametrize(("tenant", "name"), [(b"acme", b"\xff"), (b"\xff", b"default")])
def test_a_tenant_or_file_name_that_is_not_utf8_is_refused(
    tmp_path: Path, tenant: bytes, name: bytes
) -> None:
    """Its id would hold a lone surrogate, which a metric label cannot: refused as (path)."""
    directory = os.path.join(os.fsencode(tmp_path), tenant)
    os.makedirs(directory)
    with open(os.path.join(directory, name + b".json"), "wb") as file:
        file.write(json.dumps(GOOD).encode())
    with pytest.raises(PolicyError, match="not UTF-8") as caught:
        load_policies(tmp_path)
    assert caught.value.field == "(path)"
    assert "\\xff" in str(caught.value)
