"""Hostile inputs for bench/hostile_input.py: seeded random and named cases, no I/O.

Kept apart from the runner so the cases can be read (and reused) without the process
plumbing. Every generator takes a ``random.Random``: the same seed gives the same bytes.
Raw tokens that Python's ``json`` cannot write (NaN, Infinity, 1e400, 5,000-digit
integers, deep nesting) are spliced into the serialized text through placeholders.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

RAW_TOKENS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1" + "0" * 5000,
    str(2**64),
    str(-(2**63) - 1),
    "[" * 70 + "]" * 70,
    "{" + '"a":{' * 70 + "}" * 71,
)
# Subjects a client might name in assignment_subject: allowed, reserved, wildcards, junk.
SUBJECTS = (
    "caf.exec.assign.v1",
    "caf.exec.assign.v1.gpu",
    "beamline.usage.v1.metered",
    "caf.exec.assign.v1.ack",
    "caf.exec.assign.v1.ack.dlq",
    "caf.exec.result.v1",
    "caf.exec.result.v1.dlq",
    "beamline.router.v1.decide",
    "beamline.router.v1.decide.reply",
    "$JS.API.>",
    "$JS.API.STREAM.DELETE.ROUTER_USAGE",
    "$SYS.REQ.SERVER.PING",
    "_INBOX.x",
    "caf.exec.assign.v1.*",
    "caf.exec.assign.v1.>",
    ">",
    "a b",
    "",
    "other.subject",
)
DIRECTIVES = (
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Subject-Sequence",
    "Nats-Expected-Last-Msg-Id",
    "Nats-TTL",
    "Nats-Rollup",
    "Nats-Msg-Id",
)


class Raw:
    """Splices raw JSON text into a document (``dumps`` below)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def token(self, text: str) -> str:
        self.tokens.append(text)
        return f"\x00RAW{len(self.tokens) - 1}\x00"

    def dumps(self, document: Any) -> bytes:
        text = json.dumps(document)
        for i, token in enumerate(self.tokens):
            text = text.replace(f'"\\u0000RAW{i}\\u0000"', token)
        return text.encode()


def random_text(rng: random.Random) -> str:
    size = rng.choice((0, 1, 8, 40, 257, 300, 5000))
    alphabet = rng.choice(
        (
            "abcxyz019-_.",
            "\x00\x01\r\n\t\x1b\x7f a",
            "é€😀\u202e\ufeff",
            "*>$. ",
            '"\\{}[]:,',
        )
    )
    return "".join(rng.choice(alphabet) for _ in range(size))


def random_value(rng: random.Random, raw: Raw, depth: int = 0) -> Any:
    """Any JSON value, or a raw token standard JSON does not allow."""
    kind = rng.randrange(12)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice((0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1))
    if kind == 3:
        return rng.choice((0.0, -0.0, 1e-300, 1.7976931348623157e308, -5.5, 0.001))
    if kind in (4, 5):
        return random_text(rng)
    if kind == 6 and depth < 4:
        return [random_value(rng, raw, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7 and depth < 4:
        return {random_text(rng): random_value(rng, raw, depth + 1) for _ in range(3)}
    if kind in (8, 9):
        return raw.token(rng.choice(RAW_TOKENS))
    return rng.choice(("1", "true", "null", "NaN", "{}", "acme"))


def mutate_document(rng: random.Random, document: dict[str, Any], raw: Raw) -> None:
    """Replace, delete or add one field anywhere in the document (in place)."""
    target: dict[str, Any] = document
    while True:
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if not nested or rng.random() < 0.5:
            break
        target = target[rng.choice(nested)]
    action = rng.randrange(3)
    keys = list(target)
    if action == 0 and keys:
        target[rng.choice(keys)] = random_value(rng, raw)
    elif action == 1 and keys:
        del target[rng.choice(keys)]
    else:
        target[random_text(rng) or "x"] = random_value(rng, raw)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete or truncate bytes of a serialized document."""
    out = bytearray(data)
    for _ in range(rng.randrange(1, 4)):
        if not out:
            break
        at = rng.randrange(len(out))
        action = rng.randrange(4)
        if action == 0:
            out[at] = rng.randrange(256)
        elif action == 1:
            out[at:at] = rng.choice((b"NaN", b"\xff\xfe", b"{", b"]", b'"', b"\\u0000", b"1e400"))
        elif action == 2:
            del out[at]
        else:
            del out[at:]
    return bytes(out)


def fuzzed(rng: random.Random, base: dict[str, Any]) -> bytes:
    """One hostile variant of ``base``: random bytes, mutated bytes or mutated fields."""
    roll = rng.random()
    if roll < 0.2:  # left valid: pushes, sticky sessions, usage events happen too
        return json.dumps(base).encode()
    if roll < 0.25:
        return rng.randbytes(rng.randrange(1, 200))
    if roll < 0.4:
        return mutate_bytes(rng, json.dumps(base).encode())
    raw = Raw()
    for _ in range(rng.randrange(1, 4)):
        mutate_document(rng, base, raw)
    return raw.dumps(base)


def decide_base(rng: random.Random, request_id: str) -> dict[str, Any]:
    """A valid decide request, varied: tenant, policy, sticky session, constraints, push."""
    document: dict[str, Any] = {
        "version": "1",
        "request_id": request_id,
        "tenant_id": rng.choice(("acme", "acme", "globex", "nobody")),
        "trace_id": f"{rng.getrandbits(128):032x}",
        "task": {"type": rng.choice(("text", "image")), "payload": {"prompt": "hi"}},
    }
    if rng.random() < 0.3:
        document["policy_id"] = rng.choice(("default", "missing"))
    if rng.random() < 0.5:
        document["metadata"] = {"session_id": "s" * rng.choice((1, 256, 257, 10_000))}
    if rng.random() < 0.3:
        document["constraints"] = {
            "max_cost": rng.choice((0, 0.001, 1, 1e9)),
            "max_latency_ms": rng.choice((0, 50, 1000)),
        }
    if rng.random() < 0.4:
        document["push_assignment"] = True
        if rng.random() < 0.5:
            document["assignment_subject"] = rng.choice(SUBJECTS)
    return document


def decide_case(rng: random.Random, request_id: str) -> bytes:
    return fuzzed(rng, decide_base(rng, request_id))


def result_base(rng: random.Random, assignment_id: str) -> dict[str, Any]:
    return {
        "assignment_id": assignment_id,
        "request_id": f"r-{assignment_id}",
        "status": rng.choice(("success", "error", "timeout", "cancelled")),
        "provider_id": rng.choice(("a", "b")),
        "job": {"type": "text"},
        "latency_ms": rng.choice((0, 1, 120, 5000)),
        "cost": rng.choice((0, 0.01, 2.5)),
        "trace_id": f"{rng.getrandbits(128):032x}",
        "tenant_id": rng.choice(("acme", "globex")),
        "timestamp": 1_700_000_000_000,
    }


def ack_base(rng: random.Random, assignment_id: str) -> dict[str, Any]:
    return {
        "assignment_id": assignment_id,
        "status": rng.choice(("accepted", "rejected", "error")),
        "message": "",
        "tenant_id": rng.choice(("acme", "globex")),
    }


def policy_base(rng: random.Random) -> dict[str, Any]:
    return {
        "providers": [
            {"name": "a", "weight": rng.randrange(101), "expected_cost": 0.01},
            {"name": "b", "weight": rng.randrange(1, 101), "expected_latency_ms": 100},
        ],
        "strategy": rng.choice(("weighted", "latency", "cost", "least_busy")),
        "sticky": {"enabled": True, "session_key": "session_id", "ttl_seconds": 60},
        "rate_limit": {"enabled": False, "requests_per_second": 10, "burst": 10},
        "circuit_breaker": {"enabled": True, "failure_threshold": 3},
    }


def policy_case(rng: random.Random) -> bytes:
    return fuzzed(rng, policy_base(rng))


NAMED_POLICIES: dict[str, bytes] = {
    "empty file": b"",
    "not UTF-8": b'{"providers": [{"name": "\xff", "weight": 1}]}',
    "NaN weight": b'{"providers": [{"name": "a", "weight": NaN}]}',
    "Infinity estimate": b'{"providers": [{"name": "a", "weight": 1, "expected_cost": Infinity}]}',
    "1e400 estimate": b'{"providers": [{"name": "a", "weight": 1, "expected_latency_ms": 1e400}]}',
    "5,000-digit weight": b'{"providers": [{"name": "a", "weight": 1' + b"0" * 5000 + b"}]}",
    "nested 100,000 deep": b'{"providers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "weight 101": b'{"providers": [{"name": "a", "weight": 101}]}',
    "no providers": b'{"providers": []}',
    "duplicate provider names": b'{"providers": [{"name": "a", "weight": 1}, {"name": "a", "weight": 2}]}',
    "unknown key": b'{"providers": [{"name": "a", "weight": 1}], "evil": true}',
    "a JSON array": b"[]",
    "ttl_seconds 0": b'{"providers": [{"name": "a", "weight": 1}], "sticky": {"enabled": true, "ttl_seconds": 0}}',
}


def is_strict_json(data: bytes) -> bool:
    """True when ``data`` is UTF-8 standard JSON: no NaN/Infinity, finite numbers, 64-bit ints."""

    def refuse(token: str) -> Any:
        raise ValueError(token)

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value

    def integer(text: str) -> int:
        value = int(text)
        if not -(2**63) <= value < 2**64:
            raise ValueError(text)
        return value

    try:
        json.loads(data, parse_constant=refuse, parse_float=number, parse_int=integer)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return True
