"""Benchmark: the Router's own cost per decide at another commit and now, in one run.

    .venv/bin/python bench/decide_versions.py BASE [--requests N] [--rounds R] [--in-flight K]
                                                   [--push]

The throughput ratio of bench/decide_vs_raw.py moves by ±0.15 with the machine's other load;
what one change does to the Router is smaller than that. This runs the raw nats-py responder,
``natsrouter run`` from BASE's ``src/`` (exported with ``git archive`` and put first on its
``PYTHONPATH``) and ``natsrouter run`` from this worktree side by side on one nats-server,
each on its own subject, and sends N decides (ids never repeated) to each in turn
at K in flight, R rounds, the order turning every round. It prints, per responder, the
median of its CPU time per request (user + system, /proc, Linux only), requests/s and p99,
and each process's resident set size at the end (the Routers' idempotency memories full of
the run's answers). ``--push``: every decide also pushes its assignment, and the raw
responder publishes one JetStream message and waits for its PubAck before answering (as in
bench/decide_vs_raw.py's push comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
from pathlib import Path

from decide_vs_raw import Figures, Ids, load, start_raw, start_router, wait_answering
from natsrouter.embedded import NatsServer


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def export(commit: str, into: Path) -> Path:
    """``src/`` of ``commit`` under ``into``; returns the directory to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", commit, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


async def measure(args: argparse.Namespace, head: str, tmp: Path, base_src: Path) -> None:
    server = NatsServer(store_dir=tmp / "js")
    server.start()
    names = ("raw", f"Router {args.base}", f"Router {head} (worktree)")
    subjects = dict(zip(names, ("bench.raw", "bench.base", "bench.head"), strict=True))
    procs = {
        names[0]: start_raw(server.url, subjects[names[0]], args.push),
        names[1]: start_router(server.url, tmp, subjects[names[1]], {"PYTHONPATH": str(base_src)}),
        names[2]: start_router(server.url, tmp, subjects[names[2]]),
    }
    figures: dict[str, list[Figures]] = {name: [] for name in names}
    ids = Ids()
    try:
        for name in names:
            await wait_answering(server.url, subjects[name], args.push)
            await load(server.url, subjects[name], ids.take(2000), 10, args.push)  # warm-up
        for round_no in range(args.rounds):
            turn = round_no % len(names)
            for name in names[turn:] + names[:turn]:
                figures[name].append(
                    await load(
                        server.url,
                        subjects[name],
                        ids.take(args.requests),
                        args.in_flight,
                        args.push,
                        procs[name].pid,
                    )
                )
        rss = {name: rss_kib(proc.pid) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
        server.kill()
    print(
        f"{args.requests} decides per responder per round, {args.rounds} rounds, "
        f"{args.in_flight} in flight{', with push' if args.push else ''}; medians"
    )
    print(
        f"{'':>28} | {'CPU µs/req':>10} {'req/s':>8} {'p99 ms':>7} | {'RSS MiB':>7} | "
        "CPU µs/req per round"
    )
    for name in names:
        rows = figures[name]
        cpu = statistics.median(f[3] for f in rows)
        rate = statistics.median(f[0] for f in rows)
        p99 = statistics.median(f[2] for f in rows)
        per_round = " ".join(f"{f[3]:.0f}" for f in rows)
        print(
            f"{name:>28} | {cpu:>10.1f} {rate:>8,.0f} {p99:>7.2f} | "
            f"{rss[name] / 1024:>7.1f} | {per_round}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="the commit to compare with (e.g. main)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--push", action="store_true", help="decides with push_assignment")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        asyncio.run(measure(args, head, tmp, export(args.base, tmp)))


if __name__ == "__main__":
    main()
