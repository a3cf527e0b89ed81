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
    "duplicate provider names": b'{"providers": [{"name": "a", "weight": 1}, {"name": "a"}]}',
    "unknown key": b'{"providers": [{"name": "a", "weight": 1}], "evil": true}',
    "a JSON array": b"[]",
    "ttl_seconds 0": b'{"providers": [{"name": "a", "weight": 1}], "sticky": {"ttl_seconds": 0}}',
}


DECIDE_SUBJECT = "beamline.router.v1.decide"
ACKS, RESULTS = "caf.exec.assign.v1.ack", "caf.exec.result.v1"
RESULT = result_base(random.Random(0), "") | {"status": "success", "tenant_id": "acme"}
ACK = ack_base(random.Random(0), "") | {"status": "accepted", "tenant_id": "acme"}


def request(request_id: str, **fields: Any) -> dict[str, Any]:
    base = {"version": "1", "request_id": request_id, "tenant_id": "acme"}
    return {**base, "task": {"type": "text", "payload": {}}, **fields}


def splice(request_id: str, text: str) -> bytes:
    """A valid request with raw JSON text added before its closing brace."""
    return json.dumps(request(request_id)).encode()[:-1] + b"," + text.encode() + b"}"


def doc(request_id: str, **fields: Any) -> bytes:
    return json.dumps(request(request_id, **fields)).encode()


def named_decides(transport: str) -> list[tuple[str, bytes, str]]:
    """(name, body, expected code) of every named decide case."""
    p = f"named-{transport}-"
    invalid = "invalid_request"
    unmet = "constraints_unsatisfiable"
    bad, ok = invalid, "ok"
    cases: list[tuple[str, bytes, str]] = [
        ("max_cost Infinity", splice(p + "inf", '"constraints":{"max_cost":Infinity}'), invalid),
        ("max_latency_ms NaN", splice(p + "nan", '"constraints":{"max_latency_ms":NaN}'), invalid),
        ("-Infinity in metadata", splice(p + "ninf", '"metadata":{"x":-Infinity}'), invalid),
        ("1e400 in metadata", splice(p + "big", '"metadata":{"x":1e400}'), invalid),
        ("5,000-digit integer", splice(p + "digits", '"metadata":{"n":1' + "0" * 5000 + "}"), bad),
        ("2^64 integer", splice(p + "2p64", f'"metadata":{{"n":{2**64}}}'), invalid),
        ("nested 100,000 deep", splice(p + "deep", '"metadata":' + "[" * 10**5 + "]" * 10**5), bad),
        ("not UTF-8", b'{"version":"1","request_id":"\xff\xfe"}', invalid),
        ("empty body", b"", invalid),
        ("null", b"null", invalid),
        ("a JSON array", b"[1,2]", invalid),
        ("tenant_id with CR LF", doc(p + "crlf", tenant_id="ac\r\nme"), invalid),
        ("request_id with NUL", doc(p + "\x00nul"), invalid),
        ("trace_id with DEL", doc(p + "del", trace_id="t\x7f"), invalid),
        ("request_id of 257 chars", doc("r" * 257), invalid),
        ("request_id of 900,000 chars", doc("r" * 900_000), invalid),
        ("unknown tenant", doc(p + "tenant", tenant_id="nobody"), "policy_not_found"),
        ("constraints no provider meets", doc(p + "unmet", constraints={"max_cost": 0.001}), unmet),
        ("max_latency_ms 0", doc(p + "lat0", constraints={"max_latency_ms": 0}), unmet),
        ("sticky session of 10,000 chars", doc(p + "s", metadata={"session_id": "s" * 10**4}), ok),
        ("sticky session of 900 kB", doc(p + "m", metadata={"session_id": "s" * 900_000}), "ok"),
    ]  # fmt: skip
    if transport == "http":  # over NATS the server's own max_payload (1 MB) refuses it
        cases.append(("body of 2 MB", doc(p + "2mb", metadata={"x": "y" * 2_000_000}), invalid))
    for subject in SUBJECTS:
        if subject in ("caf.exec.assign.v1", "caf.exec.assign.v1.gpu", ""):
            continue  # allowed, or refused by the schema like any empty string
        body = doc(p + subject, push_assignment=True, assignment_subject=subject)
        cases.append((f"assignment_subject {subject}", body, invalid))
    return cases


def named_headers(transport: str) -> list[tuple[str, bytes, dict[str, str], str]]:
    """(name, body, headers, expected code) of the named header cases (headers win over the
    payload). The HTTP client refuses control characters in headers, so those go over NATS."""
    p = f"named-{transport}-header-"
    cases = [
        ("trace_id header of 257 chars", {"trace_id": "t" * 257}, "invalid_request"),
        ("tenant_id header of 257 chars", {"tenant_id": "a" * 257}, "invalid_request"),
        ("traceparent header of junk", {"traceparent": "00-zz-" + "q" * 2000}, "ok"),
        ("tenant_id header of another tenant", {"tenant_id": "globex"}, "ok"),
    ]
    if transport == "nats":
        cases += [
            ("trace_id header of 100,000 chars", {"trace_id": "t" * 100_000}, "invalid_request"),
            ("trace_id header with SOH", {"trace_id": "t\x01x"}, "invalid_request"),
            ("tenant_id header with DEL", {"tenant_id": "acme\x7f"}, "invalid_request"),
        ]
    return [
        (name, doc(f"{p}{i}", push_assignment=True), headers, expect)
        for i, (name, headers, expect) in enumerate(cases)
    ]


def named_worker(assignment_id: str) -> list[tuple[str, str, bytes]]:
    """(name, subject, body) of every named bad ack and result: each must be dead-lettered."""
    result = json.dumps(RESULT | {"assignment_id": assignment_id}).encode()
    ack = json.dumps(ACK | {"assignment_id": assignment_id}).encode()
    cases = []
    for subject, valid in ((RESULTS, result), (ACKS, ack)):
        for name, old, new in (
            ("latency_ms NaN", b'"latency_ms": 120', b'"latency_ms": NaN'),
            ("cost Infinity", b'"cost": 0.01', b'"cost": Infinity'),
            ("cost -Infinity", b'"cost": 0.01', b'"cost": -Infinity'),
            ("latency_ms 1e400", b'"latency_ms": 120', b'"latency_ms": 1e400'),
            ("timestamp 2^64", b"1700000000000", str(2**64).encode()),
            ("timestamp of 5,000 digits", b"1700000000000", b"1" + b"0" * 5000),
            ("status a number", b'"status": "success"', b'"status": 5'),
            ("latency_ms a string", b'"latency_ms": 120', b'"latency_ms": "fast"'),
            ("tenant_id null", b'"tenant_id": "acme"', b'"tenant_id": null'),
            ("tenant_id with CR LF", b'"tenant_id": "acme"', b'"tenant_id": "ac\\r\\nme"'),
            ("assignment_id with NUL", b'"assignment_id": "', b'"assignment_id": "\\u0000'),
            ("status accepted with NaN", b'"status": "accepted"', b'"status": NaN'),
            ("status accepted with a list", b'"status": "accepted"', b'"status": []'),
        ):
            if old in valid:
                cases.append((name, subject, valid.replace(old, new, 1)))
        cases += [
            ("invalid JSON", subject, valid[:-5]),
            ("not UTF-8", subject, b'{"status": "\xff"}'),
            ("empty", subject, b""),
            ("a JSON array", subject, b"[]"),
            ("nested 100,000 deep", subject, b"[" * 10**5 + b"]" * 10**5),
        ]
    return cases


def named_worker_headers(assignment_id: str) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(name, subject, valid body, headers): headers win over the body, so each breaks it."""
    result = json.dumps(RESULT | {"assignment_id": assignment_id}).encode()
    ack = json.dumps(ACK | {"assignment_id": assignment_id}).encode()
    return [
        (name, subject, body, headers)
        for subject, body in ((RESULTS, result), (ACKS, ack))
        for name, headers in (
            ("tenant_id header of 257 chars", {"tenant_id": "a" * 257}),
            # JetStream stores at most 64 kB of headers
            ("trace_id header of 60,000 chars", {"trace_id": "t" * 60_000}),
            ("trace_id header with SOH", {"trace_id": "t\x01x"}),
            ("tenant_id header with DEL", {"tenant_id": "acme\x7f"}),
        )
    ]


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
