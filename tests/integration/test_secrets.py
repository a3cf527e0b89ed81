"""Secrets never leak: a real `natsrouter run` against a nats-server with user/password or
token auth, credentials full of URL separators, and every surface an operator can read."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from tests.helpers.process import NATSROUTER, RouterProcess

pytestmark = pytest.mark.integration

FAST_ENV = {
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "100",
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
    "ROUTER_LOG_LEVEL": "debug",
}
# Each holds @, :, / and %, the characters that cut a URL's userinfo short when parsed naively.
USER = "rtr-Usr4"
PASSWORD = "Zq8w@vT3x:/kR5y%mN4z"
TOKEN = "Tk9a@wQ4b:/jH6c%pL7d"


def fragments(secret: str) -> list[str]:
    """The secret and each piece of it between separators."""
    return [secret, *(p for p in re.split(r"[@:/%]", secret) if p)]


def shown(text: str, secrets: list[str]) -> list[str]:
    return [piece for secret in secrets for piece in fragments(secret) if piece in text]


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def decide(router: RouterProcess) -> int:
    body = {
        "version": "1",
        "request_id": "r1",
        "tenant_id": "acme",
        "policy_id": "default",
        "task": {"type": "t", "payload": {}},
        "push_assignment": True,
    }
    request = urllib.request.Request(
        router.decide_url, data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def check_config(router: RouterProcess) -> tuple[int, str]:
    done = subprocess.run(
        [NATSROUTER, "check-config"],
        env=router.env,
        cwd=router.tmp,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("server_args", "userinfo"),
    [
        (["--user", USER, "--pass", PASSWORD], f"{USER}:{PASSWORD}"),
        # A ':' in a token is written %3A, else the token reads as user:password.
        (["--auth", TOKEN], TOKEN.replace(":", "%3A")),
    ],
    ids=["user_password", "token"],
)
def test_credentials_with_separators_connect_and_are_shown_nowhere(
    tmp_path: Path, routers: list[RouterProcess], server_args: list[str], userinfo: str
) -> None:
    """Connected with the secret; /status, /metrics, every log line and check-config hide it."""
    server = NatsServer(store_dir=tmp_path / "js", extra_args=server_args)
    server.start()
    try:
        router = RouterProcess(
            {"ROUTER_NATS_URL": f"nats://{userinfo}@127.0.0.1:{server.port}", **FAST_ENV},
            tmp_path,
        )
        routers.append(router)
        router.wait(router.ready, what="ready (the server accepted the credentials)")
        assert decide(router) == 200
        status = router.status()
        metrics = router.get("/metrics")[1]
        assert router.stop() == 0
    finally:
        server.kill()
    assert status["server"] == f"nats://127.0.0.1:{server.port}"
    code, output = check_config(router)
    assert code == 0
    surfaces = [json.dumps(status), metrics, router.stderr_path.read_text(), output]
    assert [shown(text, [USER, PASSWORD, TOKEN]) for text in surfaces] == [[], [], [], []]


def test_a_refused_secret_is_shown_nowhere(tmp_path: Path, routers: list[RouterProcess]) -> None:
    """A wrong password full of separators: reason=auth, and no piece of it in any output."""
    server = NatsServer(store_dir=tmp_path / "js", extra_args=["--user", USER, "--pass", "other"])
    server.start()
    try:
        router = RouterProcess(
            {"ROUTER_NATS_URL": f"nats://{USER}:{PASSWORD}@127.0.0.1:{server.port}", **FAST_ENV},
            tmp_path,
        )
        routers.append(router)
        router.wait(
            lambda: router.codes().count("NATS_RECONNECT_FAILED") >= 2, what="two failed attempts"
        )
        status = router.status()
        metrics = router.get("/metrics")[1]
        assert router.stop() == 0
    finally:
        server.kill()
    failed = [line for line in router.lines() if line.get("error_code") == "NATS_CONNECTION_FAILED"]
    assert (failed[0]["reason"], failed[0]["server"]) == ("auth", f"nats://127.0.0.1:{server.port}")
    surfaces = [json.dumps(status), metrics, router.stderr_path.read_text()]
    assert [shown(text, [USER, PASSWORD]) for text in surfaces] == [[], [], []]


@pytest.mark.parametrize(
    "url",
    [
        f"nats://{USER}:{PASSWORD}@127.0.0.1:99999",
        f"http://{USER}:{PASSWORD}@127.0.0.1:4222",
        f"nats://{USER}:{PASSWORD}@127.0.0.1:4222,nats://other:{TOKEN}@127.0.0.1:4223",
    ],
    ids=["bad_port", "bad_scheme", "two_credentials"],
)
def test_a_configuration_error_about_the_url_shows_no_secret(tmp_path: Path, url: str) -> None:
    """check-config and run refuse the URL naming nats_url, with no piece of any credential."""
    router = RouterProcess({"ROUTER_NATS_URL": url}, tmp_path, start=False)
    code, output = check_config(router)
    router.start()
    assert router.proc is not None
    assert router.proc.wait(timeout=30) == 2
    run_output = router.stderr_path.read_text()
    assert code == 2
    assert output.startswith("natsrouter: configuration error: nats_url: ")
    assert [shown(text, [USER, PASSWORD, TOKEN]) for text in (output, run_output)] == [[], []]
