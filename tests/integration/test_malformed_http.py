"""Garbage on the HTTP ports of a real `natsrouter run`: answered 400, logged as one WARN line
without a traceback (not an ERROR per request), and the process keeps serving."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsrouter.embedded import free_port
from tests.helpers.process import RouterProcess

pytestmark = pytest.mark.integration

# What a scanner, a confused client or an attacker sends to an HTTP port.
GARBAGE: list[bytes] = [
    b"GARBAGE \x00\x01 nonsense\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # a TLS ClientHello
    b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
    b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nBREW /pot HTCPCP/1.0\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /\x7f HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
]
ROUNDS = 5


def send_raw(port: int, data: bytes) -> bytes:
    """Send bytes, read what comes back until the server closes (it does after a 400)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
        return answer


@pytest.fixture
def router(tmp_path: Path) -> Iterator[RouterProcess]:
    process = RouterProcess(
        {
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp_path / "store"),
        },
        tmp_path,
    )
    try:
        yield process
    finally:
        process.kill()


def test_garbage_on_both_ports_is_one_warn_line_and_no_traceback(router: RouterProcess) -> None:
    """Many malformed requests on http_port and metrics_port: 400s, one WARN, no ERROR."""
    router.wait(router.ready, what="ready")
    statuses = [
        send_raw(port, data)[:12]
        for _ in range(ROUNDS)
        for port in (router.http_port, router.metrics_port)
        for data in GARBAGE
    ]
    assert router.get("/health/ready")[0] == 200
    assert router.stop() == 0
    sent = ROUNDS * 2 * len(GARBAGE)
    assert statuses.count(b"HTTP/1.0 400") + statuses.count(b"HTTP/1.1 400") >= sent - 2 * ROUNDS
    text = router.stderr_path.read_text()
    malformed = [
        line for line in router.lines() if line.get("error_code") == "ROUTER_HTTP_REQUEST_MALFORMED"
    ]
    assert [(line["level"], line["suppressed"]) for line in malformed] == [("WARN", 0)]
    assert [line for line in router.lines() if line["level"] == "ERROR"] == []
    assert "Traceback" not in text
