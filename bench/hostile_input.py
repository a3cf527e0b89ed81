"""Hostile input against a real `natsrouter run`: decides, worker messages, policy files.

    .venv/bin/python bench/hostile_input.py [--seed S] [--decides N] [--worker N] [--policies N]

Starts `natsrouter run` (embedded nats-server, temporary directory, free loopback ports),
then, with a seeded random generator (bench/hostile_cases.py):

- sends N random or mutated DecideRequests over NATS and N over HTTP, plus the named cases
  (NaN, Infinity, 1e400, huge integers, deep nesting, reserved and wildcard assignment
  subjects, control characters in ids, overlong sticky sessions, repeats, another tenant's
  request_id, constraints no provider meets), and checks every answer with a strict parser;
- publishes N random or mutated acks and N results to their JetStream subjects, plus named
  bad ones and valid ones carrying every JetStream directive header, then reads the usage,
  DLQ and assignment streams back;
- drops N random or mutated policy files (and named bad ones) into the policies directory,
  each followed by SIGHUP.

Prints a markdown table; exit 0 when there were 0 crashes, 0 answers of 500, 0 messages
that are not standard JSON, 0 worker directives on Router publishes and every named case
answered as expected; 1 otherwise (the failures are listed).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

sys.path.insert(0, str(Path(__file__).parent))
from hostile_cases import (  # noqa: E402
    DIRECTIVES,
    NAMED_POLICIES,
    ack_base,
    decide_base,
    decide_case,
    fuzzed,
    is_strict_json,
    policy_case,
    result_base,
)

from natsrouter.embedded import free_port  # noqa: E402

DECIDE = "beamline.router.v1.decide"
ACKS, RESULTS = "caf.exec.assign.v1.ack", "caf.exec.result.v1"
POLICY = {
    "providers": [
        {"name": "a", "weight": 60, "expected_latency_ms": 100, "expected_cost": 0.01},
        {"name": "b", "weight": 40, "expected_latency_ms": 200, "expected_cost": 0.02},
    ],
    "sticky": {"enabled": True, "session_key": "session_id", "ttl_seconds": 600},
    "circuit_breaker": {"enabled": True, "failure_threshold": 1000},
}
RESULT = result_base(random.Random(0), "") | {"status": "success", "tenant_id": "acme"}
ACK = ack_base(random.Random(0), "") | {"status": "accepted", "tenant_id": "acme"}
USAGE_HEADERS = {"trace_id", "tenant_id", "version", "traceparent", "Nats-Msg-Id"}
ASSIGNMENT_HEADERS = {"trace_id", "tenant_id", "version", "traceparent", "Nats-Msg-Id"}


class Router:
    """`natsrouter run` with its own embedded nats-server, stderr kept in a file."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.policies = tmp / "policies"
        for tenant in ("acme", "globex"):
            (self.policies / tenant).mkdir(parents=True)
            (self.policies / tenant / "default.json").write_text(json.dumps(POLICY))
        self.nats_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.url = f"nats://127.0.0.1:{self.nats_port}"
        self.stderr = tmp / "stderr.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        env |= {
            "ROUTER_EMBEDDED_NATS_PORT": str(self.nats_port),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp / "nats"),
            "ROUTER_HTTP_PORT": str(self.http_port),
            "ROUTER_METRICS_HOST": "127.0.0.1",
            "ROUTER_METRICS_PORT": str(self.metrics_port),
            "ROUTER_POLICIES_PATH": str(self.policies),
            "ROUTER_POLICIES_RELOAD_INTERVAL_MS": "0",
        }
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "natsrouter"), "run"],
                env=env,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"level": "NOT_JSON", "msg": line})
        return out

    def codes(self, code: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("error_code") == code]


async def http_get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url) as resp:
        return resp.status, await resp.read()


async def metrics(router: Router, session: aiohttp.ClientSession) -> dict[str, float]:
    """Samples of /metrics keyed by their text (name and labels as written)."""
    _, body = await http_get(session, f"http://127.0.0.1:{router.metrics_port}/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Tally:
    """Answers by transport and status/code, and every failure named."""

    def __init__(self) -> None:
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.failures: list[str] = []

    def fail(self, what: str) -> None:
        self.failures.append(what)


async def answer_nats(nc: Client, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    try:
        return (await nc.request(DECIDE, body, timeout=5, headers=headers)).data
    except NatsTimeout:
        return b"<no answer>"


async def answer_http(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, await r.read()


def code_of(data: bytes) -> str:
    if not is_strict_json(data):
        return "NOT STRICT JSON"
    document = json.loads(data)
    if not isinstance(document, dict):
        return "NOT AN OBJECT"
    if document.get("ok") is True:
        return "ok"
    return str(document.get("error", {}).get("code"))


async def decide_phase(
    router: Router, nc: Client, session: aiohttp.ClientSession, args: argparse.Namespace
) -> Tally:
    """Random and named decides over both transports; answers tallied by code."""
    tally = Tally()
    url = f"http://127.0.0.1:{router.http_port}/v1/decide"
    gate = asyncio.Semaphore(16)

    async def one(transport: str, body: bytes, expect: str | None, name: str) -> bytes:
        """Send over ``transport`` ("nats" or "http"; "... named" tallies apart)."""
        async with gate:
            if transport.startswith("nats"):
                data = await answer_nats(nc, body)
                status = 0
            else:
                status, data = await answer_http(session, url, body)
        code = code_of(data)
        label = f"{status} {code}" if status else code
        tally.counts[transport][label] += 1
        if code in ("NOT STRICT JSON", "NOT AN OBJECT", "internal") or status >= 500 and (
            code not in ("decision_failed", "overloaded")
        ):
            tally.fail(f"{transport} {name}: {status} {data[:200]!r}")
        if expect is not None and code != expect:
            tally.fail(f"{transport} named '{name}': expected {expect}, got {label}")
        return data

    for transport, seed in (("nats", args.seed), ("http", args.seed + 1)):
        rng = random.Random(seed)
        bodies = [decide_case(rng, f"fz-{transport}-{i}") for i in range(args.decides)]
        await asyncio.gather(*(one(transport, b, None, "random") for b in bodies))
    for transport in ("nats", "http"):
        for name, body, expect in named_decides(transport):
            await one(f"{transport} named", body, expect, name)
        await repeats(transport, one, tally)
    return tally


def request(request_id: str, **fields: Any) -> dict[str, Any]:
    base = {"version": "1", "request_id": request_id, "tenant_id": "acme"}
    return {**base, "task": {"type": "text", "payload": {}}, **fields}


def splice(request_id: str, text: str) -> bytes:
    """A valid request with raw JSON text added before its closing brace."""
    return json.dumps(request(request_id)).encode()[:-1] + b"," + text.encode() + b"}"


def named_decides(transport: str) -> list[tuple[str, bytes, str]]:
    """(name, body, expected code) of every named decide case."""
    p = f"named-{transport}-"
    cases: list[tuple[str, bytes, str]] = [
        ("max_cost Infinity", splice(p + "inf", '"constraints":{"max_cost":Infinity}'), "x"),
        ("max_latency_ms NaN", splice(p + "nan", '"constraints":{"max_latency_ms":NaN}'), "x"),
        ("-Infinity in metadata", splice(p + "ninf", '"metadata":{"x":-Infinity}'), "x"),
        ("1e400 in metadata", splice(p + "big", '"metadata":{"x":1e400}'), "x"),
        ("5,000-digit integer", splice(p + "digits", '"metadata":{"n":1' + "0" * 5000 + "}"), "x"),
        ("2^64 integer", splice(p + "2p64", f'"metadata":{{"n":{2**64}}}'), "x"),
        ("nested 100,000 deep", splice(p + "deep", '"metadata":' + "[" * 10**5 + "]" * 10**5), "x"),
        ("not UTF-8", b'{"version":"1","request_id":"\xff\xfe"}', "x"),
        ("empty body", b"", "x"),
        ("null", b"null", "x"),
        ("a JSON array", b"[1,2]", "x"),
        ("tenant_id with CR LF", json.dumps(request(p + "crlf", tenant_id="ac\r\nme")).encode(), "x"),
        ("request_id with NUL", json.dumps(request(p + "\x00nul")).encode(), "x"),
        ("trace_id with DEL", json.dumps(request(p + "del", trace_id="t\x7f")).encode(), "x"),
        ("request_id of 257 chars", json.dumps(request("r" * 257)).encode(), "x"),
        ("unknown tenant", json.dumps(request(p + "tenant", tenant_id="nobody")).encode(), "policy_not_found"),
        ("constraints no provider meets", json.dumps(request(p + "unmet", constraints={"max_cost": 0.001})).encode(), "constraints_unsatisfiable"),
        ("max_latency_ms 0", json.dumps(request(p + "lat0", constraints={"max_latency_ms": 0})).encode(), "constraints_unsatisfiable"),
        ("sticky session of 10,000 chars", json.dumps(request(p + "sticky", metadata={"session_id": "s" * 10_000})).encode(), "ok"),
        ("sticky session of 1 MB", json.dumps(request(p + "sticky-mb", metadata={"session_id": "s" * 900_000})).encode(), "ok"),
    ]  # fmt: skip
    if transport == "http":
        cases.append(("body of 2 MB", json.dumps(request(p + "2mb", metadata={"x": "y" * 2_000_000})).encode(), "x"))  # fmt: skip
    for subject in (
        "$JS.API.>",
        "$JS.API.STREAM.DELETE.ROUTER_USAGE",
        "_INBOX.x",
        "beamline.usage.v1.metered",
        "caf.exec.result.v1",
        "caf.exec.assign.v1.ack",
        "caf.exec.result.v1.dlq",
        "caf.exec.assign.v1.ack.dlq",
        "beamline.router.v1.decide",
        "caf.exec.assign.v1.*",
        "caf.exec.assign.v1.>",
        "other.subject",
    ):
        body = request(p + subject, push_assignment=True, assignment_subject=subject)
        cases.append((f"assignment_subject {subject}", json.dumps(body).encode(), "x"))
    return [(n, b, "invalid_request" if e == "x" else e) for n, b, e in cases]


async def repeats(transport: str, one: Any, tally: Tally) -> None:
    """The same decide three times, another tenant's request_id, a changed repeat."""
    rid = f"repeat-{transport}"
    body = json.dumps(request(rid, push_assignment=True)).encode()
    ids = {json.loads(await one(f"{transport} named", body, "ok", "repeat"))["decision"]["assignment_id"] for _ in range(3)}  # fmt: skip
    if len(ids) != 1:
        tally.fail(f"{transport}: a repeated decide got {len(ids)} assignment ids")
    other = json.dumps(request(rid, tenant_id="globex", push_assignment=True)).encode()
    answer = json.loads(await one(f"{transport} named", other, "ok", "other tenant's request_id"))
    if answer["decision"]["assignment_id"] in ids:
        tally.fail(f"{transport}: another tenant's request_id got the same assignment")
    changed = json.dumps(request(rid, push_assignment=True, policy_id="other")).encode()
    await one(f"{transport} named", changed, "invalid_request", "repeat asking for another policy")
    tally.counts["repeat ids"][rid] = len(ids)


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


async def drained(js: Any) -> bool:
    """Both worker consumers have nothing pending and nothing unacknowledged."""
    for stream, durable in (("ROUTER_RESULTS", "router-results"), ("ROUTER_ACKS", "router-acks")):
        info = await js.consumer_info(stream, durable)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def stream_last(js: Any, stream: str) -> tuple[int, str | None]:
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if not last:
        return 0, None
    headers = (await js.get_msg(stream, last)).headers or {}
    return last, headers.get("Nats-Msg-Id")


async def allow_directives(js: Any) -> None:
    """Let the worker streams take rollup and TTL headers, so a worker can send every one."""
    for stream in ("ROUTER_RESULTS", "ROUTER_ACKS"):
        config = (await js.stream_info(stream)).config
        config.allow_rollup_hdrs = True
        config.allow_msg_ttl = True
        await js.update_stream(config)


async def directive_publish(js: Any, subject: str, body: bytes, n: int) -> int:
    """Publish with every JetStream directive, each satisfied for the stream as it is now."""
    stream = "ROUTER_RESULTS" if subject == RESULTS else "ROUTER_ACKS"
    await until(lambda: drained(js), "the consumers to finish", 30)
    last, last_id = await stream_last(js, stream)
    headers = {
        "Nats-Expected-Stream": stream,
        "Nats-Expected-Last-Sequence": str(last),
        "Nats-Expected-Last-Subject-Sequence": str(last),
        "Nats-TTL": "1h",
        "Nats-Rollup": "sub",
        "Nats-Msg-Id": f"worker-directive-{n}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    if last_id is not None:
        headers["Nats-Expected-Last-Msg-Id"] = last_id
    ack = await js.publish(subject, body, headers=headers)
    return int(ack.seq)


async def worker_phase(
    router: Router, nc: Client, session: aiohttp.ClientSession, args: argparse.Namespace
) -> dict[str, Any]:
    """Random and named acks and results, then the streams read back and checked."""
    js = nc.jetstream()
    out: dict[str, Any] = {"failures": [], "published": collections.Counter()}
    await allow_directives(js)
    expect_dlq: dict[str, str] = {}  # dlq Nats-Msg-Id -> named case
    expect_usage: list[str] = []
    for i, (name, subject, body) in enumerate(named_worker("named-1")):
        stream = "ROUTER_RESULTS" if subject == RESULTS else "ROUTER_ACKS"
        seq = await directive_publish(js, subject, body, i) if i % 2 else (
            (await js.publish(subject, body)).seq
        )
        expect_dlq[f"dlq-{stream}-{seq}"] = f"{subject} {name}"
        out["published"][f"{subject} named"] += 1
        # A rollup purges what came before on the subject: let the consumer take it first.
        await until(lambda: drained(js), "the consumers to finish", 30)
    for i, subject in enumerate((RESULTS, ACKS)):
        body = result_base(random.Random(i), f"directive-{i}")
        if subject == ACKS:
            body = ack_base(random.Random(i), f"directive-{i}")
        body["tenant_id"] = "acme"
        await directive_publish(js, subject, json.dumps(body).encode(), 1000 + i)
        out["published"][f"{subject} valid with every directive"] += 1
        if subject == RESULTS:
            expect_usage.append(f"usage-4:acme:directive-{i}")
    rng = random.Random(args.seed + 2)
    for subject, make in ((RESULTS, result_base), (ACKS, ack_base)):
        bodies = [fuzzed(rng, make(rng, f"fz-{subject}-{i}")) for i in range(args.worker)]
        for start in range(0, len(bodies), 100):
            acks = [js.publish(subject, b) for b in bodies[start : start + 100]]
            await asyncio.gather(*acks)
        out["published"][f"{subject} random"] += len(bodies)

    await until(lambda: drained(js), "the consumers to finish", 120)
    out["metrics"] = await metrics(router, session)
    usage = await read_stream(js, "ROUTER_USAGE")
    dlq = await read_stream(js, "ROUTER_DLQ")
    assignments = await read_stream(js, "ROUTER_ASSIGNMENTS")
    out["streams"] = {"usage": len(usage), "dlq": len(dlq), "assignments": len(assignments)}
    fail = out["failures"].append
    for name, messages, allowed in (
        ("ROUTER_USAGE", usage, USAGE_HEADERS),
        ("ROUTER_ASSIGNMENTS", assignments, ASSIGNMENT_HEADERS),
    ):
        for seq, data, headers in messages:
            if not is_strict_json(data):
                fail(f"{name} seq {seq} is not standard JSON: {data[:120]!r}")
            if set(headers) - allowed:
                fail(f"{name} seq {seq} carries {sorted(set(headers) - allowed)}")
    out["non_json"] = sum(not is_strict_json(d) for _, d, _ in usage + assignments)
    for seq, _, headers in dlq:
        bad = [h for h in headers if h in DIRECTIVES and h != "Nats-Msg-Id"]
        if bad or not headers.get("Nats-Msg-Id", "").startswith("dlq-"):
            fail(f"ROUTER_DLQ seq {seq} carries worker directives {bad or headers}")
    out["directives_on_router_publishes"] = sum(
        1
        for _, _, headers in usage + dlq + assignments
        for h in headers
        if h in DIRECTIVES and h != "Nats-Msg-Id"
    )
    dead = {h.get("Nats-Msg-Id"): h.get("dlq_reason") for _, _, h in dlq}
    for msg_id, name in expect_dlq.items():
        if dead.get(msg_id) != "invalid":
            fail(f"named '{name}' was not dead-lettered as invalid ({dead.get(msg_id)})")
    usage_ids = {h.get("Nats-Msg-Id") for _, _, h in usage}
    for msg_id in expect_usage:
        if msg_id not in usage_ids:
            fail(f"the valid result with every directive gave no usage event {msg_id}")
    out["named"] = len(expect_dlq) + len(expect_usage)
    m = out["metrics"]
    out["dlq"] = {k: int(v) for k, v in m.items() if k.startswith("router_dlq_total{")}
    settled = sum(
        v
        for k, v in m.items()
        if k.startswith(("router_dlq_total{", "router_results_total{", "router_acks_total{"))
        or k in ("router_results_duplicate_total", "router_acks_duplicate_total")
    )
    published = sum(out["published"].values())
    if settled != published:
        fail(f"{published} worker messages published, {settled:.0f} settled: {out['dlq']}")
    status, body = await http_get(session, f"http://127.0.0.1:{router.http_port}/v1/providers")
    estimates: list[tuple[Any, Any]] = [
        (p["expected_latency_ms"], p["expected_cost"])
        for policy in json.loads(body)["policies"]
        for p in policy["providers"]
    ] if status == 200 and is_strict_json(body) else []
    if not estimates:
        fail(f"/v1/providers answered {status} {body[:200]!r}")
    out["estimates"] = estimates
    return out


async def read_stream(js: Any, stream: str) -> list[tuple[int, bytes, dict[str, str]]]:
    info = await js.stream_info(stream)
    out = []
    if info.state.messages:
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:  # a rolled-up or deleted sequence
                continue
            out.append((seq, msg.data or b"", dict(msg.headers or {})))
    return out


async def policy_phase(
    router: Router, session: aiohttp.ClientSession, args: argparse.Namespace
) -> dict[str, Any]:
    """Random and named policy files, each followed by SIGHUP; the Router must keep serving."""
    out: dict[str, Any] = {"failures": [], "refused": 0, "accepted": 0, "named_file": 0}
    out["named_field"] = 0
    target = router.policies / "acme" / "fuzz.json"
    rng = random.Random(args.seed + 3)
    cases = [("random", policy_case(rng)) for _ in range(args.policies)]
    cases += list(NAMED_POLICIES.items())
    decide = json.dumps(request("policy-probe")).encode()
    url = f"http://127.0.0.1:{router.http_port}/v1/decide"
    for name, body in cases:
        before_ok = len(router.codes("ROUTER_POLICIES_LOADED"))
        before_failed = len(router.codes("ROUTER_POLICY_RELOAD_FAILED"))
        loaded_before = (await metrics(router, session))["router_policies_loaded"]
        target.write_bytes(body)
        router.proc.send_signal(signal.SIGHUP)

        async def settled() -> bool:
            ok = len(router.codes("ROUTER_POLICIES_LOADED")) > before_ok
            return ok or len(router.codes("ROUTER_POLICY_RELOAD_FAILED")) > before_failed

        await until(settled, f"the reload of policy case {name}", 10)
        refusals = router.codes("ROUTER_POLICY_RELOAD_FAILED")[before_failed:]
        if refusals:
            out["refused"] += 1
            out["named_file"] += refusals[0].get("file") == str(target)
            out["named_field"] += bool(refusals[0].get("field"))
            if refusals[0].get("file") != str(target):
                out["failures"].append(f"policy {name}: refusal names {refusals[0]}")
            loaded = (await metrics(router, session))["router_policies_loaded"]
            if loaded != loaded_before:
                out["failures"].append(f"policy {name}: {loaded_before} in force became {loaded}")
        else:
            out["accepted"] += 1
            if name != "random":
                out["failures"].append(f"named policy '{name}' was accepted")
        status, answer = await answer_http(session, url, decide)
        if status != 200:
            out["failures"].append(f"policy {name}: the probe decide got {status} {answer[:200]!r}")
    target.unlink()
    return out


def table(decides: Tally, worker: dict[str, Any], policies: dict[str, Any], end: dict[str, Any],
          args: argparse.Namespace) -> str:  # fmt: skip
    def answers(transport: str) -> str:
        counted = decides.counts[transport] + decides.counts[f"{transport} named"]
        return ", ".join(f"{n:,} × {label}" for label, n in sorted(counted.items()))

    m = worker["metrics"]

    def metric(name: str) -> int:
        return int(sum(v for k, v in m.items() if k == name or k.startswith(name + "{")))

    named_nats = sum(decides.counts["nats named"].values())
    named_http = sum(decides.counts["http named"].values())
    bad = len(decides.failures)
    rows = [
        "| surface | what was tried | answers | crashes / 500s / not standard JSON / failed checks |",
        "|---|---|---|---|",
        f"| NATS decide | {args.decides:,} random or mutated DecideRequests (seed {args.seed}) + "
        f"{named_nats} named | {answers('nats')} | {end['crashes']} / – / "
        f"{decides.counts['nats']['NOT STRICT JSON'] + decides.counts['nats named']['NOT STRICT JSON']} / {bad} |",
        f"| HTTP decide | {args.decides:,} random or mutated (seed {args.seed + 1}) + {named_http} named "
        f"| {answers('http')} | {end['crashes']} / {end['http_500']} / "
        f"{decides.counts['http']['NOT STRICT JSON'] + decides.counts['http named']['NOT STRICT JSON']} / {bad} |",
        f"| results and acks | {args.worker:,} random or mutated results + {args.worker:,} acks "
        f"(seed {args.seed + 2}), {worker['named']} named (every JetStream directive on half of "
        f"them and on one valid result and ack) | {metric('router_messages_invalid_total'):,} dead-lettered "
        f"invalid, {metric('router_usage_emitted_total'):,} usage events, "
        f"{metric('router_results_total'):,} results and {metric('router_acks_total'):,} acks processed, "
        f"{metric('router_results_duplicate_total') + metric('router_acks_duplicate_total'):,} duplicates; "
        f"{worker['streams']['usage']:,} usage events, {worker['streams']['assignments']:,} assignments and "
        f"{worker['streams']['dlq']:,} dead letters read back, worker directives on them: "
        f"{worker['directives_on_router_publishes']}; provider estimates finite | {end['crashes']} / – / "
        f"{worker['non_json']} / {len(worker['failures'])} |",
        f"| policy files + SIGHUP | {args.policies:,} random or mutated files (seed {args.seed + 3}) + "
        f"{len(NAMED_POLICIES)} named | {policies['refused']:,} refused ({policies['named_file']:,} naming the "
        f"file, {policies['named_field']:,} also a field), {policies['accepted']:,} accepted; the set in force "
        f"kept and a decide answered 200 after each | {end['crashes']} / – / – / {len(policies['failures'])} |",
    ]
    return "\n".join(rows)


async def run(args: argparse.Namespace, tmp: Path) -> int:
    router = Router(tmp)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            try:
                url = f"http://127.0.0.1:{router.metrics_port}/health/ready"
                return (await http_get(session, url))[0] == 200
            except aiohttp.ClientError:
                return router.proc.poll() is not None

        await until(ready, "readiness", 30)
        if router.proc.poll() is not None:
            print(router.stderr.read_text()[-3000:])
            return 1
        nc = await nats.connect(router.url)
        try:
            decides = await decide_phase(router, nc, session, args)
            worker = await worker_phase(router, nc, session, args)
            policies = await policy_phase(router, session, args)
        finally:
            await nc.close()
        end: dict[str, Any] = {"crashes": int(router.proc.poll() is not None)}
        end["http_500"] = sum(
            n for label, n in (decides.counts["http"] + decides.counts["http named"]).items()
            if label.startswith("5") and "overloaded" not in label and "decision_failed" not in label
        )
    router.proc.send_signal(signal.SIGTERM)
    end["exit"] = router.proc.wait(timeout=60)
    lines = router.lines()
    levels = collections.Counter(line.get("level") for line in lines)
    errors = collections.Counter(
        line.get("error_code") for line in lines if line.get("level") in ("ERROR", "CRITICAL")
    )
    tracebacks = sum("Traceback" in json.dumps(line) for line in lines)
    print(table(decides, worker, policies, end, args))
    print(f"\n{time.monotonic() - started:.0f} s; exit code after SIGTERM {end['exit']}; "
          f"stderr: {len(lines):,} lines, {levels['NOT_JSON']} not JSON, {tracebacks} tracebacks, "
          f"ERROR lines by code {dict(errors)}; dead letters {worker['dlq']}; estimates {sorted(set(worker['estimates']), key=str)}")  # fmt: skip
    failures = decides.failures + worker["failures"] + policies["failures"]
    unexpected = {code: n for code, n in errors.items() if code != "ROUTER_POLICY_RELOAD_FAILED"}
    if end["exit"] != 0 or end["crashes"] or tracebacks or levels["NOT_JSON"] or unexpected:
        failures.append(f"process: exit {end['exit']}, {tracebacks} tracebacks, errors {unexpected}")
    for failure in failures[:50]:
        print("FAILED:", failure)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--decides", type=int, default=2000, help="random decides per transport")
    parser.add_argument("--worker", type=int, default=1000, help="random results, and acks")
    parser.add_argument("--policies", type=int, default=200, help="random policy files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        sys.exit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
