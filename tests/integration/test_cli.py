"""`natsrouter` as a user runs it: a real process, real signals, JSON on stderr, exit codes."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer, free_port
from tests.helpers.process import DEMO_POLICY, NATSROUTER, RouterProcess
from tests.integration.test_router_decide import decide_request, nats_decide

pytestmark = pytest.mark.integration
FAST_ENV = {
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "100",
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
}


@pytest.fixture
def routers(tmp_path: Path) -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def test_run_with_embedded_server_serves_and_stops_cleanly(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """No nats_url: starts its own nats-server, becomes ready, exits 0 on SIGTERM."""
    nats_port = free_port()
    router = RouterProcess(
        {
            "ROUTER_EMBEDDED_NATS_PORT": str(nats_port),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp_path / "store"),
        },
        tmp_path,
    )
    routers.append(router)
    router.wait(lambda: router.get("/health/ready")[0] == 200, what="ready")
    status, text = router.get("/metrics")
    assert status == 200
    assert "router_nats_connection_status 1.0" in text
    assert json.loads(router.get("/status")[1])["server"] == f"nats://127.0.0.1:{nats_port}"
    assert router.stop() == 0
    lines = router.lines()
    assert all({"ts", "level", "message", "logger"} <= line.keys() for line in lines)
    assert "NATS_CONNECTION_ESTABLISHED" in [line.get("error_code") for line in lines]
    assert (tmp_path / "store" / "jetstream").is_dir()
    with pytest.raises(ConnectionRefusedError):  # the embedded server is gone with the router
        socket.create_connection(("127.0.0.1", nats_port), timeout=1).close()


def test_starts_without_nats_and_becomes_ready_when_it_appears(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Configured server down at start: alive and not ready, then ready once it is up."""
    server = NatsServer(store_dir=tmp_path / "js")
    router = RouterProcess({"ROUTER_NATS_URL": server.url, **FAST_ENV}, tmp_path)
    routers.append(router)
    router.wait(lambda: router.get("/health/live")[0] == 200, what="live")
    assert router.get("/health/ready")[0] == 503
    assert "router_nats_connection_status 0.5" in router.get("/metrics")[1]
    try:
        server.start()
        router.wait(lambda: router.get("/health/ready")[0] == 200, what="ready")
    finally:
        server.kill()
    assert router.stop() == 0


def test_run_decides_over_nats_after_its_connection_is_replaced(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Start-up heap frozen with the first connection: a new one answers decides over NATS."""
    server = NatsServer(port=free_port(), store_dir=tmp_path / "js")
    server.start()
    try:
        router = RouterProcess({"ROUTER_NATS_URL": server.url, **FAST_ENV}, tmp_path)
        routers.append(router)
        router.wait(lambda: router.get("/health/ready")[0] == 200, what="ready")

        def decide(request_id: str) -> Any:
            body = json.dumps(decide_request(request_id=request_id)).encode()
            return asyncio.run(nats_decide(server.url, body))

        assert decide("before")["ok"] is True
        server.kill()
        router.wait(lambda: router.get("/health/ready")[0] == 503, what="not ready")
        server.start()
        router.wait(lambda: router.get("/health/ready")[0] == 200, what="ready again")
        assert decide("after")["decision"]["provider_id"] == "p1"
    finally:
        server.kill()
    assert router.stop() == 0


def test_exit_policy_exits_non_zero_after_exhaustion(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """nats_on_reconnect_exhausted=exit: exit code 3 once the attempts are used up."""
    router = RouterProcess(
        {
            "ROUTER_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "ROUTER_NATS_RECONNECT_ATTEMPTS": "2",
            "ROUTER_NATS_ON_RECONNECT_EXHAUSTED": "exit",
            **FAST_ENV,
        },
        tmp_path,
    )
    routers.append(router)
    assert router.proc.wait(timeout=20) == 3
    codes = [line.get("error_code") for line in router.lines()]
    assert codes.count("NATS_RECONNECTION_EXHAUSTED") == 1


def test_wrong_password_is_logged_as_auth_and_never_printed(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """A rejected credential: reason=auth in JSON lines; the password appears nowhere."""
    server = NatsServer(
        store_dir=tmp_path / "js", extra_args=["--user", "router", "--pass", "server-side-pw"]
    )
    server.start()
    try:
        router = RouterProcess(
            {
                "ROUTER_NATS_URL": f"nats://router:Wr0ng-s3cret@127.0.0.1:{server.port}",
                **FAST_ENV,
            },
            tmp_path,
        )
        routers.append(router)
        router.wait(
            lambda: (
                sum(
                    1
                    for line in router.lines()
                    if line.get("error_code") == "NATS_RECONNECT_FAILED"
                )
                >= 2
            ),
            what="two failed reconnects",
        )
        assert router.stop() == 0
    finally:
        server.kill()
    text = router.stderr_path.read_text()
    assert "Wr0ng-s3cret" not in text
    failed = [line for line in router.lines() if line.get("error_code") == "NATS_CONNECTION_FAILED"]
    assert failed[0]["reason"] == "auth"
    assert failed[0]["server"] == f"nats://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ROUTER_NATS_RECONNECT_ATTEMPTS": "many"}, "nats_reconnect_attempts"),
        ({"ROUTER_NATS_PENDING_OVERFLOW": "drop_all"}, "nats_pending_overflow"),
        ({"ROUTER_NO_SUCH_THING": "1"}, "ROUTER_NO_SUCH_THING"),
    ],
)
def test_bad_configuration_exits_2_naming_the_key(env: dict[str, str], key: str) -> None:
    """run and check-config refuse bad configuration with exit 2 and the key's name."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    for command in ("run", "check-config"):
        done = subprocess.run(
            [NATSROUTER, command],
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2
        assert f"configuration error: {key}: " in done.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """check-config with a valid TOML file exits 0."""
    cfg = tmp_path / "natsrouter.toml"
    cfg.write_text('nats_url = "nats://127.0.0.1:4222"\nnats_reconnect_attempts = 10\n')
    (tmp_path / "policies" / "acme").mkdir(parents=True)
    (tmp_path / "policies" / "acme" / "default.json").write_text(json.dumps(DEMO_POLICY))
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    done = subprocess.run(
        [NATSROUTER, "check-config", "--config", str(cfg)],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "configuration OK: 1 policies in policies")


def test_run_decides_over_http_out_of_the_box_and_reloads_on_sighup(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Embedded server, shipped-style policy, decide over HTTP; SIGHUP loads a new policy."""
    router = RouterProcess(
        {
            **FAST_ENV,
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_POLICIES_RELOAD_INTERVAL_MS": "0",
        },
        tmp_path,
    )
    routers.append(router)
    router.wait(lambda: router.get("/health/ready")[0] == 200, what="readiness")

    def decide(policy_id: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps(
            {
                "version": "1",
                "request_id": f"r-{policy_id}",
                "tenant_id": "acme",
                "policy_id": policy_id,
                "task": {"type": "t", "payload": {}},
                "push_assignment": True,
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{router.http_port}/v1/decide", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, answer = decide("default")
    assert (status, answer["decision"]["provider_id"]) == (200, "p1")
    assert answer["assignment"]["outcome"] == "sent"
    assert decide("gold")[0] == 404
    (tmp_path / "policies" / "acme" / "gold.json").write_text(
        json.dumps({"providers": [{"name": "g", "weight": 1}]})
    )
    router.proc.send_signal(signal.SIGHUP)
    router.wait(lambda: decide("gold")[0] == 200, what="the reload")
    assert router.stop() == 0
    assert "natsrouter stopped" in [line["message"] for line in router.lines()]


def test_run_refuses_an_invalid_policy_with_exit_2(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """A broken policy file stops start-up: exit 2, the file and field in the log."""
    policy = tmp_path / "policies" / "acme" / "default.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(json.dumps({"providers": [{"name": "p1", "weight": 500}]}))
    router = RouterProcess({**FAST_ENV, "ROUTER_EMBEDDED_NATS_PORT": str(free_port())}, tmp_path)
    routers.append(router)
    assert router.proc.wait(timeout=30) == 2
    [line] = [entry for entry in router.lines() if entry["message"] == "invalid policies"]
    assert line["field"] == "providers[0].weight"
    assert line["file"].endswith("acme/default.json")


def test_run_refuses_a_spool_another_process_holds_with_exit_2(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Two Routers on one spool would replay the same items: the second stops at start-up."""
    spool = tmp_path / "spool.db"
    first = RouterProcess(
        {
            **FAST_ENV,
            "ROUTER_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nobody listens: queueing
            "ROUTER_NATS_PENDING_SPOOL_PATH": str(spool),
        },
        tmp_path,
    )
    routers.append(first)
    first.wait(lambda: first.get("/health/live")[0] == 200, what="the first Router")
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = RouterProcess(
        {
            **FAST_ENV,
            "ROUTER_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "ROUTER_NATS_PENDING_SPOOL_PATH": str(spool),
        },
        second_dir,
    )
    routers.append(second)
    assert second.proc.wait(timeout=30) == 2
    [line] = [entry for entry in second.lines() if entry["message"] == "configuration error"]
    assert line["key"] == "nats_pending_spool_path"
    assert line["error"] == f"nats_pending_spool_path: {spool}: in use by another process"
    assert first.proc.poll() is None
    assert first.stop() == 0


def _verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NATSROUTER, "verify-metrics", url, "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_verify_metrics_passes_against_a_running_router_and_names_what_is_missing(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Exit 0 against a real `natsrouter run`; exit 1 naming the gaps against a scrape that
    lacks two families; exit 1 with the reason when nothing answers."""
    router = RouterProcess(
        {
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp_path / "store"),
        },
        tmp_path,
    )
    routers.append(router)
    router.wait(router.ready, what="ready")
    url = f"http://127.0.0.1:{router.metrics_port}/metrics"
    good = _verify(url)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.startswith("OK: all ")

    _, full = router.get("/metrics")
    partial = "\n".join(
        line
        for line in full.splitlines()
        if "router_nats_connection_status" not in line and "router_decide_total" not in line
    ).encode()

    class Partial(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(partial + b"\n")

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Partial)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        bad = _verify(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[:2] == [
        "missing: router_decide_total (counter)",
        "missing: router_nats_connection_status (gauge)",
    ]
    assert bad.stdout.splitlines()[-1].startswith("FAILED: 2 missing, 0 of the wrong type")

    nobody = _verify(f"http://127.0.0.1:{free_port()}/metrics")
    assert nobody.returncode == 1
    assert "cannot verify" in nobody.stderr and "Connection refused" in nobody.stderr
    assert router.stop() == 0
