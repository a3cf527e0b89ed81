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
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

sys.path.insert(0, str(Path(__file__).parent))  # the cases module beside this script
from hostile_cases import (
    ACKS,
    DECIDE_SUBJECT,
    DIRECTIVES,
    NAMED_POLICIES,
    RESULTS,
    ack_base,
    decide_case,
    doc,
    fuzzed,
    is_strict_json,
    named_decides,
    named_headers,
    named_worker,
    named_worker_headers,
    policy_case,
    result_base,
)
from hostile_streams import allow_directives, directive_publish, drained, read_stream, until
from natsrouter.embedded import free_port

POLICY = {
    "providers": [
        {"name": "a", "weight": 60, "expected_latency_ms": 100, "expected_cost": 0.01},
        {"name": "b", "weight": 40, "expected_latency_ms": 200, "expected_cost": 0.02},
    ],
    "sticky": {"enabled": True, "session_key": "session_id", "ttl_seconds": 600},
    "circuit_breaker": {"enabled": True, "failure_threshold": 1000},
}
SLOW_ANSWER_S = 2.0
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


class Tally:
    """Answers by transport and status/code, and every failure named."""

    def __init__(self) -> None:
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.failures: list[str] = []
        self.stored_once: set[str] = set()  # assignment ids the streams must hold once each
        self.slowest: dict[str, float] = {}  # by transport, seconds

    def fail(self, what: str) -> None:
        self.failures.append(what)


async def answer_nats(nc: Client, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    try:
        return (await nc.request(DECIDE_SUBJECT, body, timeout=5, headers=headers)).data
    except NatsTimeout:
        return b"<no answer>"


async def answer_http(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: Any = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with session.post(url, data=body, headers=headers) as r:
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

    async def one(
        transport: str, body: bytes, expect: str | None, name: str, headers: Any = None
    ) -> bytes:
        """Send over ``transport`` ("nats" or "http"; "... named" tallies apart)."""
        async with gate:
            sent = time.perf_counter()
            if transport.startswith("nats"):
                data = await answer_nats(nc, body, headers)
                status = 0
            else:
                status, data = await answer_http(session, url, body, headers)
            took = time.perf_counter() - sent
        kind = transport.split()[0]
        tally.slowest[kind] = max(tally.slowest.get(kind, 0.0), took)
        if took > SLOW_ANSWER_S:  # one request must not hold the Router
            tally.fail(f"{transport} {name}: answered in {took:.1f} s")
        code = code_of(data)
        label = f"{status} {code}" if status else code
        tally.counts[transport][label] += 1
        server_fault = status >= 500 and code not in ("decision_failed", "overloaded")
        if code in ("NOT STRICT JSON", "NOT AN OBJECT", "internal") or server_fault:
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
        for name, body, headers, expect in named_headers(transport):
            await one(f"{transport} named", body, expect, name, headers)
        await repeats(transport, one, tally)
    return tally


async def repeats(transport: str, one: Any, tally: Tally) -> None:
    """The same decide three times, another tenant's request_id, a changed repeat."""
    rid, named = f"repeat-{transport}", f"{transport} named"
    ids = set()
    for _ in range(3):
        answer = json.loads(await one(named, doc(rid, push_assignment=True), "ok", "repeat"))
        ids.add(answer["decision"]["assignment_id"])
    if len(ids) != 1:
        tally.fail(f"{transport}: a repeated decide got {len(ids)} assignment ids")
    other = doc(rid, tenant_id="globex", push_assignment=True)
    answer = json.loads(await one(named, other, "ok", "other tenant's request_id"))
    if answer["decision"]["assignment_id"] in ids:
        tally.fail(f"{transport}: another tenant's request_id got the same assignment")
    tally.stored_once |= ids | {answer["decision"]["assignment_id"]}
    changed = doc(rid, push_assignment=True, policy_id="other")
    await one(named, changed, "invalid_request", "repeat asking for another policy")


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
        seq = (
            await directive_publish(js, subject, body, i)
            if i % 2
            else ((await js.publish(subject, body)).seq)
        )
        expect_dlq[f"dlq-{stream}-{seq}"] = f"{subject} {name}"
        out["published"][f"{subject} named"] += 1
        # A rollup purges what came before on the subject: let the consumer take it first.
        await until(lambda: drained(js), "the consumers to finish", 30)
    for name, subject, body, headers in named_worker_headers("named-2"):
        stream = "ROUTER_RESULTS" if subject == RESULTS else "ROUTER_ACKS"
        seq = (await js.publish(subject, body, headers=headers)).seq
        expect_dlq[f"dlq-{stream}-{seq}"] = f"{subject} {name}"
        out["published"][f"{subject} named"] += 1
        # Each is settled at once: one message must not hold the consumer.
        await until(lambda: drained(js), f"the consumers to settle {name}", SLOW_ANSWER_S)
    for i, subject in enumerate((RESULTS, ACKS)):
        make = result_base if subject == RESULTS else ack_base
        valid = make(random.Random(i), f"directive-{i}") | {"tenant_id": "acme"}
        await directive_publish(js, subject, json.dumps(valid).encode(), 1000 + i)
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
    estimates: list[tuple[Any, Any]] = (
        [
            (p["expected_latency_ms"], p["expected_cost"])
            for policy in json.loads(body)["policies"]
            for p in policy["providers"]
        ]
        if status == 200 and is_strict_json(body)
        else []
    )
    if not estimates:
        fail(f"/v1/providers answered {status} {body[:200]!r}")
    out["non_finite"] = sum(
        not isinstance(v, int | float) or not math.isfinite(v)
        for pair in estimates
        for v in pair
        if v is not None
    )
    if out["non_finite"]:
        fail(f"non-finite provider estimates: {estimates}")
    out["assignment_ids"] = collections.Counter(
        json.loads(data).get("assignment_id") for _, data, _ in assignments if is_strict_json(data)
    )
    return out


async def policy_phase(
    router: Router, session: aiohttp.ClientSession, args: argparse.Namespace
) -> dict[str, Any]:
    """Random and named policy files, each followed by SIGHUP; the Router must keep serving."""
    out: dict[str, Any] = {"failures": [], "refused": 0, "accepted": 0, "file": 0, "field": 0}
    fail = out["failures"].append
    target = router.policies / "acme" / "fuzz.json"
    rng = random.Random(args.seed + 3)
    cases = [("random", policy_case(rng)) for _ in range(args.policies)]
    cases += list(NAMED_POLICIES.items())
    url = f"http://127.0.0.1:{router.http_port}/v1/decide"
    for name, body in cases:
        ok = len(router.codes("ROUTER_POLICIES_LOADED"))
        failed = len(router.codes("ROUTER_POLICY_RELOAD_FAILED"))
        loaded_before = (await metrics(router, session))["router_policies_loaded"]
        target.write_bytes(body)
        router.proc.send_signal(signal.SIGHUP)

        async def settled(ok: int = ok, failed: int = failed) -> bool:
            done = len(router.codes("ROUTER_POLICIES_LOADED")) > ok
            return done or len(router.codes("ROUTER_POLICY_RELOAD_FAILED")) > failed

        await until(settled, f"the reload of policy case {name}", 10)
        refusals = router.codes("ROUTER_POLICY_RELOAD_FAILED")[failed:]
        if refusals:
            out["refused"] += 1
            out["file"] += refusals[0].get("file") == str(target)
            out["field"] += bool(refusals[0].get("field"))
            if refusals[0].get("file") != str(target):
                fail(f"policy {name}: refusal names {refusals[0]}")
            loaded = (await metrics(router, session))["router_policies_loaded"]
            if loaded != loaded_before:
                fail(f"policy {name}: {loaded_before} in force became {loaded}")
        else:
            out["accepted"] += 1
            if name != "random":
                fail(f"named policy '{name}' was accepted")
        status, answer = await answer_http(session, url, doc("policy-probe"))
        if status != 200:
            fail(f"policy {name}: the probe decide got {status} {answer[:200]!r}")
    target.unlink()
    return out


def table(
    decides: Tally,
    worker: dict[str, Any],
    policies: dict[str, Any],
    end: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    """The markdown table: one row per surface."""
    m = worker["metrics"]

    def metric(*names: str) -> str:
        total = sum(v for k, v in m.items() if k in names or k.partition("{")[0] in names)
        return f"{int(total):,}"

    def decide_row(transport: str, seed: int) -> list[Any]:
        counted = decides.counts[transport] + decides.counts[f"{transport} named"]
        named = sum(decides.counts[f"{transport} named"].values())
        answers = ", ".join(f"{label}: {n:,}" for label, n in sorted(counted.items()))
        answers += f"; slowest answer {decides.slowest[transport] * 1000:,.0f} ms"
        fails = sum(f.startswith(transport) for f in decides.failures)
        http_500 = str(end["http_500"]) if transport == "http" else "n/a"
        tried = f"{args.decides:,} random or mutated DecideRequests (seed {seed}) + {named} named"
        return [f"{transport.upper()} decide", tried, answers, http_500, fails]

    streams = worker["streams"]
    worker_outcome = (
        f"dead-lettered invalid: {metric('router_messages_invalid_total')}; processed: "
        f"{metric('router_results_total')} results, {metric('router_acks_total')} acks; "
        f"usage events: {metric('router_usage_emitted_total')}; read back: {streams['usage']:,} "
        f"usage events, {streams['assignments']:,} assignments, {streams['dlq']:,} dead letters; "
        f"worker directives on them: {worker['directives_on_router_publishes']}; "
        f"non-finite provider estimates: {worker['non_finite']}"
    )
    worker_tried = (
        f"{args.worker:,} random or mutated results and {args.worker:,} acks "
        f"(seed {args.seed + 2}) + {worker['named']} named, half of them and a valid result "
        "and ack with every JetStream directive header"
    )
    policy_outcome = (
        f"refused: {policies['refused']:,} (naming the file: {policies['file']:,}, and a field: "
        f"{policies['field']:,}), accepted: {policies['accepted']:,}; set in force kept, "
        "a decide answered 200 after each"
    )
    policy_tried = (
        f"{args.policies:,} random or mutated files (seed {args.seed + 3}) + "
        f"{len(NAMED_POLICIES)} named, each followed by SIGHUP"
    )
    rows: list[list[Any]] = [
        decide_row("nats", args.seed),
        decide_row("http", args.seed + 1),
        ["acks and results", worker_tried, worker_outcome, "n/a", len(worker["failures"])],
        ["policy files", policy_tried, policy_outcome, "n/a", len(policies["failures"])],
    ]
    head = "| surface | tried | outcome | crashes | 500s | not standard JSON | failed checks |"
    lines = [head, "|---|---|---|---:|---:|---:|---:|"]
    non_json = {
        "NATS decide": decides.counts["nats"]["NOT STRICT JSON"],
        "HTTP decide": decides.counts["http"]["NOT STRICT JSON"],
        "acks and results": worker["non_json"],
        "policy files": "n/a",
    }
    for surface, tried, outcome, http_500, fails in rows:
        cells = [surface, tried, outcome, end["crashes"], http_500, non_json[surface], fails]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


async def run(args: argparse.Namespace, router: Router) -> int:
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
        http = decides.counts["http"] + decides.counts["http named"]
        end["http_500"] = sum(n for label, n in http.items() if label.startswith("500"))
    for assignment_id in decides.stored_once:
        if worker["assignment_ids"][assignment_id] != 1:
            n = worker["assignment_ids"][assignment_id]
            decides.fail(f"assignment {assignment_id} of a repeated decide stored {n} times")
    router.proc.send_signal(signal.SIGTERM)
    end["exit"] = router.proc.wait(timeout=60)
    lines = router.lines()
    levels = collections.Counter(line.get("level") for line in lines)
    errors = collections.Counter(
        line.get("error_code") for line in lines if line.get("level") in ("ERROR", "CRITICAL")
    )
    tracebacks = sum("Traceback" in json.dumps(line) for line in lines)
    print(table(decides, worker, policies, end, args))
    print(
        f"\n{time.monotonic() - started:.0f} s; exit code after SIGTERM {end['exit']}; stderr: "
        f"{len(lines):,} lines, {levels['NOT_JSON']} not JSON, {tracebacks} tracebacks, "
        f"ERROR lines by code {dict(errors)}; dead letters {worker['dlq']}"
    )
    failures = decides.failures + worker["failures"] + policies["failures"]
    unexpected = {code: n for code, n in errors.items() if code != "ROUTER_POLICY_RELOAD_FAILED"}
    if end["exit"] != 0 or end["crashes"] or tracebacks or levels["NOT_JSON"] or unexpected:
        failures.append(f"process: exit {end['exit']}, {tracebacks} tracebacks, {unexpected}")
    for failure in failures[:50]:
        print("FAILED:", failure)
    return 1 if failures else 0


async def run_and_stop(args: argparse.Namespace, tmp: Path) -> int:
    """``run``, and the Router killed if it is still there when ``run`` fails."""
    router = Router(tmp)
    try:
        return await run(args, router)
    finally:
        if router.proc.poll() is None:
            router.proc.kill()
            router.proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--decides", type=int, default=5000, help="random decides per transport")
    parser.add_argument("--worker", type=int, default=2000, help="random results, and acks")
    parser.add_argument("--policies", type=int, default=500, help="random policy files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        sys.exit(asyncio.run(run_and_stop(args, Path(tmp))))


if __name__ == "__main__":
    main()
