"""The command line: ``natsrouter run``, ``check-config``, ``verify-metrics``, ``request``,
``decide``.

The only module that reads argv, the environment and signals. ``run`` starts an embedded
nats-server when ``nats_url`` is empty, the link, the operator endpoints and the Router; it
reloads the policies on SIGHUP; it exits 0 on SIGTERM/SIGINT (after a graceful stop), 2 on
bad configuration or policies, 3 when reconnection is exhausted under the ``exit`` policy
(for a supervisor to restart it), and 4 when the embedded server or a port cannot be had.
``verify-metrics URL`` exits 0 when a live ``/metrics`` has every natsrouter metric with its
type, 1 otherwise (naming what is missing). ``request SUBJECT [BODY]`` sends one NATS request
to the configured (or embedded) server and prints the reply (exit 0), else exits 1.
``decide --tenant T`` sends a DecideRequest (over NATS, or HTTP with ``--http``) and prints
the answer: exit 0 for a decision, 1 for an error answer or none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from natsrouter.api.http import HttpServer, build_app
from natsrouter.auth import load_decide_tokens
from natsrouter.client import decide, decide_request, http_decide_url, request
from natsrouter.config import LogLevel, Settings, load_settings
from natsrouter.config_files import os_reason as _os_reason
from natsrouter.embedded import (
    PID_FILE_NAME,
    EmbeddedServerError,
    EmbeddedSupervisor,
    NatsServer,
)
from natsrouter.errors import ConfigError
from natsrouter.link.backoff import BackoffPolicy
from natsrouter.link.link import Link
from natsrouter.link.nats_transport import ConnectOptions, NatsTransport
from natsrouter.link.spool import open_pending_queue
from natsrouter.observability.logging import configure_logging, get_logger
from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.observability.verify import fetch, verify
from natsrouter.routing.policy import PolicyError, load_policies
from natsrouter.service.router import Router

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_EXHAUSTED = 3
EXIT_EMBEDDED = 4

log = get_logger("natsrouter.cli")
DESCRIPTION = (
    "natsrouter: routes jobs to providers over NATS and JetStream. Commands: run,"
    " check-config, verify-metrics, request, decide."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="natsrouter", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the service"),
        ("check-config", "validate the configuration and exit"),
        ("request", "send one NATS request (e.g. a decide) and print the reply"),
        ("decide", "send a decide request (NATS, or HTTP with --http) and print the answer"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument(
            "--config",
            type=Path,
            default=None,
            help="TOML file (ROUTER_* environment variables win)",
        )
        if name == "request":
            cmd.add_argument("subject", help="e.g. beamline.router.v1.decide or '$SRV.INFO'")
            cmd.add_argument("body", nargs="?", default="", help="the payload (default: empty)")
            cmd.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
        if name == "decide":
            _decide_arguments(cmd)
    verify = sub.add_parser(
        "verify-metrics", help="check a live /metrics for every natsrouter metric and its type"
    )
    verify.add_argument("url", help="e.g. http://127.0.0.1:9001/metrics")
    verify.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    return parser


def _decide_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--tenant", help="tenant_id (required unless --body)")
    cmd.add_argument("--policy", default=None, help="policy_id (default: the policy 'default')")
    cmd.add_argument("--task-type", default="text", help="task.type (default text)")
    cmd.add_argument("--request-id", default=None, help="request_id (default: a new UUID)")
    cmd.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    cmd.add_argument("--max-latency-ms", type=float, default=None, help="constraint")
    cmd.add_argument("--max-cost", type=float, default=None, help="constraint")
    cmd.add_argument("--push", action="store_true", help="push_assignment: push the assignment")
    cmd.add_argument("--body", default=None, help="a whole DecideRequest (JSON), sent as is")
    cmd.add_argument(
        "--http",
        nargs="?",
        const="",
        default=None,
        metavar="URL",
        help="POST to /v1/decide instead of NATS (default URL from http_host and http_port)",
    )
    cmd.add_argument(
        "--token", default=None, help="bearer token for --http (visible to ps: prefer NATS)"
    )
    cmd.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


def _decide(args: argparse.Namespace, settings: Settings) -> int:
    if args.body is not None:
        body = args.body.encode()
    elif not args.tenant:
        print("natsrouter: decide: --tenant (or --body) is required", file=sys.stderr)
        return EXIT_CONFIG
    else:
        try:
            document = decide_request(
                args.tenant,
                policy_id=args.policy,
                task_type=args.task_type,
                request_id=args.request_id,
                metadata=args.metadata,
                max_latency_ms=args.max_latency_ms,
                max_cost=args.max_cost,
                push_assignment=args.push,
            )
        except ValueError as exc:
            print(f"natsrouter: decide: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        body = json.dumps(document).encode()
    url = None if args.http is None else (args.http or http_decide_url(settings))
    return asyncio.run(decide(settings, body, args.timeout, http_url=url, token=args.token))


def verify_metrics(url: str, timeout_s: float) -> int:
    try:
        verdict = verify(fetch(url, timeout_s))
    except (OSError, ValueError) as exc:
        print(f"natsrouter: cannot verify {url}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join(verdict.lines()))
    return EXIT_OK if verdict.ok else EXIT_FAILED


def _supervisor_done(task: asyncio.Task[None]) -> None:
    # It runs until cancelled at shutdown; any other end leaves the server unwatched: say so.
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "the embedded nats-server is no longer supervised",
            error=repr(task.exception()),
            exc_info=task.exception(),
        )


def freeze_startup_heap() -> None:
    """Collect once, then leave everything alive now out of the collector's later passes.

    What exists once the Router has started (modules, settings, compiled policies, the
    memories' tables) lives as long as the process, yet every full collection walked it, and
    through the idempotency memory's table every answer in it: with 100,000 answers
    remembered, 12 % of the decide path's time and pauses of 40 to 100 ms
    (bench/decide_gc.py, docs/performance.md). Garbage made while starting is collected
    first, so nothing is frozen that could be freed. A frozen object that later becomes
    garbage in a reference cycle (the first connection's client, replaced by a reconnect) is
    never reclaimed: a one-off cost.
    """
    gc.collect()
    gc.freeze()


async def serve(settings: Settings) -> int:
    """Run until a signal (exit 0) or exhaustion under the ``exit`` policy (exit 3)."""
    # Durable by default: unless memory is chosen, what is queued survives a restart.
    try:
        settings = settings.durable_by_default()  # a new Settings: checked (and read) again
    except ConfigError as exc:
        log.error("configuration error", error=str(exc), key=exc.key)  # noqa: TRY400
        return EXIT_CONFIG
    embedded: NatsServer | None = None
    servers = settings.nats_url
    try:
        # Read once before anything starts: a policy directory the process cannot read is a
        # configuration error (exit 2), not a port that cannot be had.
        load_policies(Path(settings.policies_path))
    except PolicyError as err:
        log.error("invalid policies", error=str(err), file=str(err.path), field=err.field)  # noqa: TRY400
        return EXIT_CONFIG
    except OSError as err:
        log.error("invalid policies", error=_os_reason(err), file=settings.policies_path)  # noqa: TRY400
        return EXIT_CONFIG
    try:
        # Read once, here, and handed to the Router: a file changed since the settings were
        # checked stops start-up as a configuration error (exit 2), not a traceback.
        tokens = (
            load_decide_tokens(settings.decide_tokens_file) if settings.decide_tokens_file else None
        )
        # Opened first: a spool that cannot be used stops start-up before anything runs.
        pending = open_pending_queue(settings)
    except ConfigError as exc:
        log.error("configuration error", error=str(exc), key=exc.key)  # noqa: TRY400
        return EXIT_CONFIG
    registry = CollectorRegistry()
    router_metrics = RouterMetrics(registry)
    supervising: asyncio.Task[None] | None = None
    # Handled before the embedded server is spawned: a SIGTERM while it starts must stop it
    # with the Router, not end the Router at once and leave it holding the port and store.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if settings.embedded:
        store_dir = Path(settings.embedded_nats_store_dir)
        embedded = NatsServer(
            port=settings.embedded_nats_port,
            store_dir=store_dir,
            # A Router killed with SIGKILL leaves its server running where the kernel does
            # not stop it (die_with_parent): the next start stops that orphan.
            pid_file=store_dir / PID_FILE_NAME,
            die_with_parent=True,
        )
        try:
            await embedded.astart()
        except EmbeddedServerError as exc:
            log.error(  # noqa: TRY400
                "embedded nats-server did not start",
                error=str(exc),
                port=settings.embedded_nats_port,
            )
            pending.close()
            return EXIT_EMBEDDED
        servers = (embedded.url,)
        log.info(
            "embedded nats-server started",
            server=embedded.url,
            pid=embedded.pid,
            store_dir=settings.embedded_nats_store_dir,
        )
        supervisor = EmbeddedSupervisor(
            embedded,
            BackoffPolicy(
                settings.nats_reconnect_delay_ms,
                settings.nats_max_reconnect_delay_ms,
                settings.nats_reconnect_jitter,
            ),
            on_restart=router_metrics.embedded_nats_restarts.inc,
        )
        supervising = asyncio.get_running_loop().create_task(supervisor.run(), name="embedded")
        supervising.add_done_callback(_supervisor_done)

    # The link uses the embedded server only while it answers with that server's own name.
    transport = (
        NatsTransport(
            dataclasses.replace(ConnectOptions.from_settings(settings), server_name=embedded.name)
        )
        if embedded is not None
        else None
    )
    link = Link(
        settings, LinkMetrics(registry), servers=servers, pending=pending, transport=transport
    )
    router = Router(settings, link, router_metrics, decide_tokens=tokens)
    http = HttpServer(
        build_app(
            link,
            fault_admin=settings.nats_fault_injection_enabled,
            admin_token=settings.nats_fault_injection_token,
        ),
        settings.metrics_host,
        settings.metrics_port,
    )
    loop.add_signal_handler(signal.SIGHUP, router.reload_policies)
    code = EXIT_OK
    started = False
    try:
        try:
            await http.start()
            await link.start()
            await router.start()
        except PolicyError as err:
            log.error("invalid policies", error=str(err), file=str(err.path), field=err.field)  # noqa: TRY400
            code = EXIT_CONFIG
            return code
        except OSError as err:
            log.error("cannot listen", error=str(err))  # noqa: TRY400
            code = EXIT_EMBEDDED
            return code
        started = True
        freeze_startup_heap()
        log.info(
            "natsrouter running",
            metrics_port=http.port,
            http_port=router.http.port,
            servers=list(servers),
            policies=len(router.policies),
        )
        stopping = asyncio.create_task(stop.wait())
        exiting = asyncio.create_task(link.exit_requested.wait())
        done, waiting = await asyncio.wait({stopping, exiting}, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
        if exiting in done:
            log.error(
                "exiting: reconnection exhausted under the exit policy", exit_code=EXIT_EXHAUSTED
            )
            code = EXIT_EXHAUSTED
    finally:
        pending_count = await router.stop() if started else link.pending.count
        await link.close()
        if pending_count and settings.nats_pending_spool_path:
            log.info(
                "stopping with operations kept in the spool for the next start",
                pending_count=pending_count,
                spool=settings.nats_pending_spool_path,
            )
        elif pending_count:
            # The queue is in memory: what is still in it is gone with the process.
            log.warning("stopping with operations still pending", pending_count=pending_count)
        await http.stop()
        if supervising is not None:
            supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervising
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
        log.info("natsrouter stopped", exit_code=code)
    return code


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "verify-metrics":
        return verify_metrics(args.url, args.timeout)
    try:
        settings = load_settings(args.config, os.environ)
    except ConfigError as exc:
        print(f"natsrouter: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        try:
            policies = load_policies(Path(settings.policies_path))
        except PolicyError as exc:
            print(f"natsrouter: policy error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except OSError as exc:
            print(
                f"natsrouter: policy error: policies_path: cannot read {settings.policies_path}: "
                f"{_os_reason(exc)}",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        print(f"configuration OK: {len(policies)} policies in {settings.policies_path}")
        return EXIT_OK
    if args.command == "request":
        # The link's own lines only when something is wrong: stdout is the reply.
        configure_logging(LogLevel.ERROR, settings.log_format, secrets=settings.secrets())
        return asyncio.run(request(settings, args.subject, args.body.encode(), args.timeout))
    if args.command == "decide":
        configure_logging(LogLevel.ERROR, settings.log_format, secrets=settings.secrets())
        return _decide(args, settings)
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secrets())
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
