"""Benchmark: decide over NATS beside a raw nats-py responder; same server, one run.

    .venv/bin/python bench/decide_vs_raw.py [--requests N] [--rounds R]

Two comparisons, each against a raw responder in its own process on the same server:

- ``decide``: the raw responder is a nats-py queue subscriber answering every request with a
  fixed DecideResponse-sized body; the Router decides without pushing an assignment.
- ``push``: like for like with ``push_assignment``: the raw responder also publishes one
  ExecAssignment-sized JetStream message (with a ``Nats-Msg-Id`` and the Router's headers, to
  a file-storage stream) and waits for its PubAck before answering.

The Router is ``natsrouter run`` in its own process at the production default log level
(``info``). Both responders run for the whole comparison, each on its own subject; this
process sends requests with nats-py at 1, 10 and 100 in flight and reports requests/s, p50
and p99 latency. Each round measures every level for both, back to back, raw first or Router
first in turn (by round and by level), so each pair of measurements shares the load of its
moment on a shared machine. Absolute figures are medians over rounds; a ratio is the less
favourable to the Router of the ratio of the medians and the median of the rounds' paired
ratios (the paired ratios are printed per round too, to show the noise). The targets below
are checked against those ratios, and every one missed prints ``MISSED``.

Each measurement also reads the responder process's CPU time (user + system, from
/proc/<pid>/stat, Linux only) and prints its median per request: the cost of each responder
itself, which the machine's other load disturbs far less than it does requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from natsrouter.embedded import NatsServer, free_port

LEVELS = (1, 10, 100)

#: (comparison, in flight, measure, target). ``rate``: Router req/s over raw's, at least the
#: target; ``p99``: Router p99 over raw's, at most the target.
TARGETS: tuple[tuple[str, int, str, float], ...] = (
    ("decide", 1, "rate", 0.9),
    ("decide", 10, "rate", 0.9),
    ("decide", 100, "rate", 0.8),
    ("decide", 100, "p99", 1.5),
    ("push", 100, "rate", 0.8),
)

RAW_RESPONDER = """
import asyncio, json, sys, uuid, nats
BODY = b'{"ok":true,"decision":{"provider_id":"a","priority":0,"expected_latency_ms":null,' \\
       b'"expected_cost":null,"reason":"weighted","policy_id":"default","fallback_used":false},' \\
       b'"context":{"request_id":"bench-000000","trace_id":"0123456789abcdef0123456789abcdef"}}'
PUSHED = BODY[:-1] + b',"assignment":{"assignment_id":"00000000-0000-0000-0000-000000000000",' \\
       b'"subject":"bench.raw.assign","outcome":"sent","stream":"RAW_BENCH","seq":1}}'
# Shaped and sized like the Router's ExecAssignment (routing/worker_messages.py).
ASSIGNMENT = json.dumps({"version": "1", "assignment_id": str(uuid.uuid4()),
    "request_id": "bench-0000001", "tenant_id": "bench",
    "executor": {"provider_id": "a", "channel": "nats"},
    "job": {"type": "text", "payload": {"prompt": "hello"}},
    "options": {"priority": 0, "deadline_ms": None,
                "retry": {"max_attempts": 1, "backoff_ms": 1000}},
    "correlation": {"trace_id": "0123456789abcdef0123456789abcdef"},
    "decision": {"provider_id": "a", "priority": 0, "expected_latency_ms": None,
                 "expected_cost": None, "reason": "weighted", "policy_id": "default",
                 "fallback_used": False},
    "metadata": {}}, separators=(",", ":")).encode()
async def main():
    url, subject, push = sys.argv[1], sys.argv[2], sys.argv[3] == "push"
    nc = await nats.connect(url)
    js = nc.jetstream()
    if push:
        await js.add_stream(name="RAW_BENCH", subjects=["bench.raw.assign"],
                            duplicate_window=300.0)
    async def answer(msg):
        await nc.publish(msg.reply, BODY)
    async def publish_then_answer(msg):
        msg_id = str(uuid.uuid4())
        headers = {"trace_id": "0" * 32, "tenant_id": "bench", "version": "1",
                   "traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
                   "Nats-Msg-Id": msg_id}
        await js.publish("bench.raw.assign", ASSIGNMENT, headers=headers)
        await nc.publish(msg.reply, PUSHED)
    if push:
        # One task per request, as the Router does: the PubAck wait must not hold the others.
        tasks = set()
        async def spawn(msg):
            task = asyncio.get_running_loop().create_task(publish_then_answer(msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await nc.subscribe(subject, queue="raw", cb=spawn)
    else:
        await nc.subscribe(subject, queue="raw", cb=answer)
    while nc.pending_data_size:  # nats-py's flush PING would overtake the SUB
        await asyncio.sleep(0)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

Figures = tuple[float, float, float, float]  # requests/s, p50 ms, p99 ms, CPU µs per request

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (Linux /proc); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICKS


def request_body(i: int, push: bool) -> bytes:
    return json.dumps(
        {
            "version": "1",
            "request_id": f"bench-{i:07d}",
            "tenant_id": "bench",
            "trace_id": "0123456789abcdef0123456789abcdef",
            "task": {"type": "text", "payload": {"prompt": "hello"}},
            "push_assignment": push,
        }
    ).encode()


def start_raw(url: str, subject: str, push: bool) -> subprocess.Popen[bytes]:
    mode = "push" if push else "echo"
    proc = subprocess.Popen(
        [sys.executable, "-c", RAW_RESPONDER, url, subject, mode], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("raw responder did not start")
    return proc


def start_router(
    url: str, tmp: Path, subject: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``natsrouter run`` answering on ``subject``, in a directory of its own under ``tmp``
    (its spool, data/spool.db, is relative to where it runs)."""
    policy = tmp / "policies" / "bench" / "default.json"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(
        json.dumps({"providers": [{"name": "a", "weight": 60}, {"name": "b", "weight": 40}]})
    )
    # ROUTER_LOG_LEVEL is left unset: the production default (info).
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")},
        "ROUTER_NATS_URL": url,
        "ROUTER_DECIDE_SUBJECT": subject,
        "ROUTER_POLICIES_PATH": str(policy.parents[1]),
        "ROUTER_METRICS_HOST": "127.0.0.1",
        "ROUTER_METRICS_PORT": str(free_port()),
        "ROUTER_HTTP_PORT": str(free_port()),
    }
    run_dir = tmp / f"run-{subject}"
    run_dir.mkdir(exist_ok=True)
    natsrouter = str(Path(sys.executable).parent / "natsrouter")
    return subprocess.Popen(
        [natsrouter, "run"],
        env={**env, **(extra_env or {})},
        cwd=run_dir,
        stderr=subprocess.DEVNULL,
    )


async def wait_answering(url: str, subject: str, push: bool) -> None:
    nc = await nats.connect(url)
    try:
        for _ in range(200):
            try:
                await nc.request(subject, request_body(0, push), timeout=0.5)
                return
            except Exception:
                await asyncio.sleep(0.05)
        raise RuntimeError("responder never answered")
    finally:
        await nc.close()


class Ids:
    """Request ids never repeat within a run: a repeat would be an idempotent replay."""

    def __init__(self) -> None:
        self.next = 1

    def take(self, n: int) -> range:
        taken = range(self.next, self.next + n)
        self.next += n
        return taken


async def load(
    url: str, subject: str, ids: range, in_flight: int, push: bool, pid: int | None = None
) -> Figures:
    """(requests/s, p50 ms, p99 ms, CPU µs per request of process ``pid``) for one request
    per id, ``in_flight`` outstanding."""
    nc = await nats.connect(url)
    cpu_before = cpu_seconds(pid) if pid is not None else float("nan")
    latencies: list[float] = []
    counter = iter(ids)

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            reply = await nc.request(subject, request_body(i, push), timeout=10)
            latencies.append(time.perf_counter() - started)
            if not reply.data.startswith(b'{"ok":true'):
                raise RuntimeError(f"unexpected answer: {reply.data[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else float("nan")
    await nc.close()
    latencies.sort()
    return (
        len(ids) / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        cpu / len(ids) * 1e6,
    )


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into ``out`` (collapsed stacks) until interrupted."""
    spy = str(Path(sys.executable).parent / "py-spy")
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches before the load starts
    return proc


async def measure(
    url: str,
    tmp: Path,
    comparison: str,
    requests: int,
    rounds: int,
    ids: Ids,
    profile: Path | None = None,
) -> dict[int, dict[str, list[Figures]]]:
    """Each level, raw then Router or Router then raw (alternating by round and level).

    Both responders run for the whole comparison, each on its own subject, so a pair of
    adjacent measurements shares the machine's load of the moment.
    """
    push = comparison == "push"
    subjects = {"raw": f"bench.raw.{comparison}", "router": f"bench.router.{comparison}"}
    figures: dict[int, dict[str, list[Figures]]] = {n: {"raw": [], "router": []} for n in LEVELS}
    procs = [start_raw(url, subjects["raw"], push), start_router(url, tmp, subjects["router"])]
    pids = {"raw": procs[0].pid, "router": procs[1].pid}
    try:
        for subject in subjects.values():
            await wait_answering(url, subject, push)
            await load(url, subject, ids.take(1000), 10, push)  # warm-up, not counted
        if profile is not None:
            # Sampled while the Router alone is loaded at 100 in flight; then the rounds.
            spy = start_profiler(procs[1].pid, profile.with_suffix(f".{comparison}.txt"))
            await load(url, subjects["router"], ids.take(requests * 4), 100, push)
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        for round_no in range(rounds):
            for step, in_flight in enumerate(LEVELS):
                first = (round_no + step) % 2 == 0
                order = ("raw", "router") if first else ("router", "raw")
                total = requests if in_flight > 1 else max(1000, requests // 5)
                for kind in order:
                    figures[in_flight][kind].append(
                        await load(
                            url, subjects[kind], ids.take(total), in_flight, push, pids[kind]
                        )
                    )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    return figures


def report(comparison: str, figures: dict[int, dict[str, list[Figures]]]) -> list[str]:
    """Print the table of one comparison; returns the lines of its targets."""
    print(f"\n{comparison}")
    print(
        f"{'in flight':>9} | {'raw req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'router req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'rate':>5} {'p99':>5} | "
        f"{'CPU µs/req raw':>14} {'router':>6} | rate per round"
    )
    checks = []
    for in_flight in LEVELS:
        kinds = figures[in_flight]
        raw = [statistics.median(col) for col in zip(*kinds["raw"], strict=True)]
        router = [statistics.median(col) for col in zip(*kinds["router"], strict=True)]
        pairs = list(zip(kinds["router"], kinds["raw"], strict=True))
        rates = [r[0] / w[0] for r, w in pairs]
        # The less favourable of two readings of the noise: the ratio of the medians, and
        # the median of the rounds' paired ratios.
        ratios = {
            "rate": min(statistics.median(rates), router[0] / raw[0]),
            "p99": max(statistics.median(r[2] / w[2] for r, w in pairs), router[2] / raw[2]),
        }
        per_round = " ".join(f"{rate:.2f}" for rate in rates)
        print(
            f"{in_flight:>9} | {raw[0]:>10,.0f} {raw[1]:>7.2f} {raw[2]:>7.2f} | "
            f"{router[0]:>12,.0f} {router[1]:>7.2f} {router[2]:>7.2f} | "
            f"{ratios['rate']:>5.2f} {ratios['p99']:>5.2f} | "
            f"{raw[3]:>14.1f} {router[3]:>6.1f} | {per_round}"
        )
        for name, level, measure_name, target in TARGETS:
            if name != comparison or level != in_flight:
                continue
            value = ratios[measure_name]
            met = value >= target if measure_name == "rate" else value <= target
            sign = ">=" if measure_name == "rate" else "<="
            verdict = "ok" if met else "MISSED"
            checks.append(
                f"{name:>6} {level:>3} in flight {measure_name:>4} "
                f"{value:.2f} (target {sign} {target}) {verdict}"
            )
    return checks


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--only", choices=("decide", "push"), help="run one comparison (default: both)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the Router with py-spy under 100 in flight first: PATH.<comparison>.txt",
    )
    args = parser.parse_args()
    comparisons = (args.only,) if args.only else ("decide", "push")
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; "
        f"{args.requests} requests per level, {args.rounds} rounds"
    )
    checks: list[str] = []
    ids = Ids()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(store_dir=tmp / "js")
        server.start()
        try:
            for comparison in comparisons:
                figures = await measure(
                    server.url, tmp, comparison, args.requests, args.rounds, ids, args.profile
                )
                checks += report(comparison, figures)
        finally:
            server.kill()
    print("\ntargets (Router / raw: the less favourable of ratio of medians, median of ratios)")
    for line in checks:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
