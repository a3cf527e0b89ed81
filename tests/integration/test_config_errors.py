"""Configuration mistakes through the real CLI: exit 2, a message naming the key or file, never
a traceback and never a prompt; a pod's Kubernetes Service variables are not mistakes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from natsrouter.embedded import free_port
from tests.helpers.process import NATSROUTER, RouterProcess

pytestmark = pytest.mark.integration


def natsrouter(command: str, tmp: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run one command with stdin an open pipe nobody writes to: a prompt would hang it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    with subprocess.Popen(
        [NATSROUTER, command, *args],
        env={**base, "ROUTER_METRICS_PORT": "0", "ROUTER_HTTP_PORT": "0", **env},
        cwd=tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: a Router that did start stops its embedded server
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise AssertionError(f"natsrouter {command} still running after 30 s") from None
        return proc.returncode, out + err


def encrypted_key(tmp: Path) -> dict[str, str]:
    ca = trustme.CA()
    leaf = ca.issue_cert("natsrouter@example.test")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp / "c.pem"))
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    (tmp / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    return {
        "ROUTER_NATS_URL": "tls://127.0.0.1:4222",
        "ROUTER_NATS_TLS_CA_FILE": str(tmp / "ca.pem"),
        "ROUTER_NATS_TLS_CERT_FILE": str(tmp / "c.pem"),
        "ROUTER_NATS_TLS_KEY_FILE": str(tmp / "k.pem"),
    }


def toml(text: bytes) -> Callable[[Path], tuple[dict[str, str], list[str]]]:
    def make(tmp: Path) -> tuple[dict[str, str], list[str]]:
        (tmp / "natsrouter.toml").write_bytes(text)
        return {}, ["--config", str(tmp / "natsrouter.toml")]

    return make


CASES: dict[str, tuple[Callable[[Path], tuple[dict[str, str], list[str]]], str]] = {
    "toml_string_for_int": (
        toml(b'nats_reconnect_attempts = "many"\n'),
        "nats_reconnect_attempts: expected an integer",
    ),
    "toml_int_for_url": (toml(b"nats_url = 5\n"), "nats_url: expected a comma-separated"),
    "toml_table_for_bool": (toml(b"[nats_fail_open_mode]\n"), "nats_fail_open_mode: expected"),
    "toml_date_for_str": (toml(b"policies_path = 2024-01-01\n"), "policies_path: expected a"),
    "toml_huge_int": (toml(b"js_ack_wait_ms = 9999999999999\n"), "js_ack_wait_ms: must be <="),
    "not_utf8": (toml(b'log_level = "\xff"\n'), "--config: {tmp}/natsrouter.toml is not UTF-8"),
    "directory": (lambda tmp: ({}, ["--config", str(tmp)]), "--config: is not a regular file"),
    "fifo": (
        lambda tmp: (os.mkfifo(tmp / "fifo.toml"), ({}, ["--config", str(tmp / "fifo.toml")]))[1],
        "--config: is not a regular file",
    ),
    "encrypted_key": (
        lambda tmp: (encrypted_key(tmp), []),
        "nats_tls_key_file: {tmp}/k.pem is encrypted",
    ),
    "junk_ca": (
        lambda tmp: (
            (tmp / "ca.pem").write_text("junk\n"),
            ({"ROUTER_NATS_TLS_CA_FILE": str(tmp / "ca.pem")}, []),
        )[1],
        "nats_tls_ca_file: {tmp}/ca.pem holds no usable PEM certificate",
    ),
    "misspelt_key_in_a_pod": (
        lambda tmp: ({"ROUTER_SERVICE_HOST": "10.0.0.7", "ROUTER_HTTP_PROT": "8081"}, []),
        "ROUTER_HTTP_PROT: unknown configuration key",
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["run", "check-config"])
def test_a_configuration_mistake_exits_2_naming_it(tmp_path: Path, command: str, case: str) -> None:
    """run and check-config: exit 2, one message naming the key or file, no traceback."""
    make, expected = CASES[case]
    env, args = make(tmp_path)
    code, output = natsrouter(command, tmp_path, env, *args)
    assert (code, "Traceback" in output) == (2, False), output
    assert f"natsrouter: configuration error: {expected.format(tmp=tmp_path)}" in output


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def test_runs_in_a_pod_beside_a_service_named_router(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """The variables Kubernetes injects for a Service `router` do not stop start-up."""
    service = {
        "ROUTER_SERVICE_HOST": "10.96.0.12",
        "ROUTER_SERVICE_PORT": "8080",
        "ROUTER_SERVICE_PORT_HTTP": "8080",
        "ROUTER_PORT": "tcp://10.96.0.12:8080",
        "ROUTER_PORT_8080_TCP": "tcp://10.96.0.12:8080",
        "ROUTER_PORT_8080_TCP_PROTO": "tcp",
        "ROUTER_PORT_8080_TCP_PORT": "8080",
        "ROUTER_PORT_8080_TCP_ADDR": "10.96.0.12",
    }
    router = RouterProcess(
        {
            **service,
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp_path / "store"),
        },
        tmp_path,
    )
    routers.append(router)
    router.wait(router.ready, what="ready")
    assert router.stop() == 0


def test_an_unreadable_policy_directory_exits_2_naming_it(tmp_path: Path) -> None:
    """A policies_path the OS refuses (here: a name too long): exit 2 naming it, no traceback."""
    too_long = str(tmp_path / ("p" * 300))
    env = {"ROUTER_POLICIES_PATH": too_long, "ROUTER_EMBEDDED_NATS_PORT": str(free_port())}
    check_code, check_output = natsrouter("check-config", tmp_path, env)
    run_code, run_output = natsrouter("run", tmp_path, env)
    assert (check_code, run_code) == (2, 2)
    assert check_output.startswith(
        f"natsrouter: policy error: policies_path: cannot read {too_long}"
    )
    assert '"message": "invalid policies"' in run_output
    assert "Traceback" not in check_output + run_output
