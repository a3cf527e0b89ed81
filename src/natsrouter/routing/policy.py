"""Routing policies: the model, the shipped JSON Schema, and loading a directory of them.

One file per ``<policies_path>/<tenant>/<policy_id>.json``. A file is checked against
``policy.schema.json`` (shipped in the package) and a few rules a schema cannot say
(provider names unique). ``PolicyStore.reload`` replaces the whole set only when every file
is valid: a bad file is refused with the file and the field named, and the last valid set
stays in force.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

from natsrouter.errors import NatsRouterError
from natsrouter.routing import strict_json
from natsrouter.routing.breaker import BreakerConfig
from natsrouter.routing.strategies import DEFAULT_EXPLORATION, Strategy
from natsrouter.routing.strict_json import StrictJsonError
from natsrouter.schemas import field_path, validator

DEFAULT_POLICY_ID = "default"

Scalar = str | int | float | bool


class PolicyError(NatsRouterError):
    """A policy file is invalid; says which file and which field."""

    def __init__(self, path: Path, field_path: str, message: str) -> None:
        super().__init__(f"{_shown(str(path))}: {field_path}: {message}")
        self.path = path
        self.field = field_path


@dataclass(frozen=True)
class Provider:
    name: str
    weight: float
    #: Copied into the decision and the assignment's options.
    priority: int = 0
    #: Estimates used until results of the provider have been seen.
    expected_latency_ms: float | None = None
    expected_cost: float | None = None


#: Top-level fields of the request a ``when`` key may name; any other key without a dot is
#: looked up in ``metadata`` (see routing/decider.py).
REQUEST_FIELDS = frozenset(
    ("request_id", "tenant_id", "policy_id", "trace_id", "task", "constraints", "metadata")
)


def when_path(key: str) -> tuple[str, ...]:
    """The path in the request a ``when`` key refers to: ``status`` is ``metadata.status``."""
    if "." not in key and key not in REQUEST_FIELDS:
        return ("metadata", key)
    return tuple(key.split("."))


@dataclass(frozen=True)
class Fallback:
    #: Request field (dotted path) -> accepted values; every key must match.
    when: Mapping[str, tuple[Scalar, ...]]
    to: str
    retry: int = 0
    #: ``when`` compiled once: (path, accepted values) per key, in order.
    matchers: tuple[tuple[tuple[str, ...], tuple[Scalar, ...]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = tuple((when_path(key), accepted) for key, accepted in self.when.items())
        object.__setattr__(self, "matchers", compiled)


@dataclass(frozen=True)
class Sticky:
    enabled: bool = False
    session_key: str = "session_id"
    ttl_seconds: int = 3600


@dataclass(frozen=True)
class RateLimitConfig:
    """``rate_limit``: decides a second per Router for this policy (routing/rate_limit.py)."""

    enabled: bool = False
    requests_per_second: float = 100.0
    burst: int = 100


@dataclass(frozen=True)
class Policy:
    tenant_id: str
    policy_id: str
    providers: tuple[Provider, ...]
    fallbacks: tuple[Fallback, ...] = ()
    sticky: Sticky = field(default_factory=Sticky)
    circuit_breaker: BreakerConfig = field(default_factory=BreakerConfig)
    #: How the last step picks among usable providers (routing/strategies.py).
    strategy: Strategy = Strategy.WEIGHTED
    exploration: float = DEFAULT_EXPLORATION
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    # Built once when the policy is loaded, so a decide looks up instead of rebuilding.
    #: Providers by name (names are unique in a valid policy).
    by_name: Mapping[str, Provider] = field(init=False, repr=False, compare=False)
    #: Providers with a weight above 0, in policy order, and their running sums of weights.
    weighted: tuple[Provider, ...] = field(init=False, repr=False, compare=False)
    cumulative: tuple[float, ...] = field(init=False, repr=False, compare=False)
    #: A pick is one draw against ``cumulative`` whenever the request has no constraints:
    #: the weighted strategy, no circuit breaker, and someone to pick.
    one_draw: bool = field(init=False, repr=False, compare=False)
    #: No rate limit, fallback rule or sticky session: a decide goes straight to the pick.
    direct: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, Provider] = {}
        for provider in self.providers:
            by_name.setdefault(provider.name, provider)
        weighted = tuple(p for p in self.providers if p.weight > 0)
        object.__setattr__(self, "by_name", by_name)
        object.__setattr__(self, "weighted", weighted)
        object.__setattr__(self, "cumulative", tuple(accumulate(p.weight for p in weighted)))
        one_draw = (
            self.strategy is Strategy.WEIGHTED and not self.circuit_breaker.enabled and weighted
        )
        object.__setattr__(self, "one_draw", bool(one_draw))
        direct = not (self.rate_limit.enabled or self.fallbacks or self.sticky.enabled)
        object.__setattr__(self, "direct", direct)


_VALIDATOR = validator("natsrouter.routing", "policy.schema.json")


def parse_policy(path: Path, tenant_id: str, policy_id: str, document: Any) -> Policy:
    """Check one parsed document and build the policy; raises ``PolicyError``."""
    error = _VALIDATOR.error(document)
    if error is not None:
        raise PolicyError(path, field_path(error), error.message)
    names = [p["name"] for p in document["providers"]]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise PolicyError(path, f"providers[{index}].name", f"duplicate provider {name!r}")
    sticky = document.get("sticky", {})
    fallbacks = tuple(
        Fallback(
            when={k: tuple(v) if isinstance(v, list) else (v,) for k, v in f["when"].items()},
            to=f["to"],
            retry=f.get("retry", 0),
        )
        for f in document.get("fallbacks", [])
    )
    return Policy(
        tenant_id=tenant_id,
        policy_id=policy_id,
        providers=tuple(
            Provider(
                p["name"],
                float(p["weight"]),
                p.get("priority", 0),
                p.get("expected_latency_ms"),
                p.get("expected_cost"),
            )
            for p in document["providers"]
        ),
        fallbacks=fallbacks,
        sticky=Sticky(**sticky),
        circuit_breaker=BreakerConfig(**document.get("circuit_breaker", {})),
        strategy=Strategy(document.get("strategy", Strategy.WEIGHTED.value)),
        exploration=float(document.get("exploration", DEFAULT_EXPLORATION)),
        rate_limit=RateLimitConfig(**document.get("rate_limit", {})),
    )


def _shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 written ``\\xff`` (Python reads each
    as a lone surrogate, which no log line, label or header can encode)."""
    return name if name.isascii() else os.fsencode(name).decode("utf-8", "backslashreplace")


def load_policy_file(path: Path, root: Path) -> Policy:
    """Read ``<root>/<tenant>/<policy_id>.json``."""
    relative = path.relative_to(root)
    if len(relative.parts) != 2:
        raise PolicyError(path, "(path)", "expected <tenant>/<policy_id>.json")
    tenant_id, policy_id = relative.parts[0], relative.stem
    for name in (tenant_id, policy_id):
        # The ids become metric labels (router_rate_limited_total): one that cannot be
        # encoded made every /metrics scrape fail.
        if _shown(name) != name:
            raise PolicyError(path, "(path)", f"the name {_shown(name)} is not UTF-8")
    try:
        document = strict_json.loads(path.read_bytes(), unicode_only=True)
    except OSError as exc:  # removed or unreadable between listing and reading
        raise PolicyError(path, "(document)", f"cannot be read: {exc.strerror}") from None
    except StrictJsonError as exc:
        raise PolicyError(path, exc.field, exc.message) from None
    return parse_policy(path, tenant_id, policy_id, document)


def load_policies(root: Path) -> dict[tuple[str, str], Policy]:
    """Every policy under ``root``; the first invalid file raises ``PolicyError``."""
    if not root.is_dir():
        raise PolicyError(root, "(path)", "policies directory not found")
    policies: dict[tuple[str, str], Policy] = {}
    for path in sorted(root.rglob("*.json")):
        policy = load_policy_file(path, root)
        policies[(policy.tenant_id, policy.policy_id)] = policy
    return policies


class PolicyStore:
    """The policies in force; a reload takes effect only if every file is valid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: (tenant_id, policy_id) -> policy; replaced whole by a reload, never changed in
        #: place. Read directly by the decide path (``get`` is a call more per decide).
        self.by_key: Mapping[tuple[str, str], Policy] = {}

    def reload(self) -> int:
        """Load the directory again; on ``PolicyError`` the previous set stays in force."""
        self.by_key = load_policies(self.root)
        return len(self.by_key)

    def get(self, tenant_id: str, policy_id: str = DEFAULT_POLICY_ID) -> Policy | None:
        return self.by_key.get((tenant_id, policy_id))

    def all(self) -> list[Policy]:
        return list(self.by_key.values())

    def __len__(self) -> int:
        return len(self.by_key)
