"""Admin and decide need a credential: /admin/faults behind its bearer token, POST /v1/decide
behind a tokens file; checked on real processes and a real link."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from natsrouter.api.http import MAX_FAULT_DELAY_MS, HttpServer, build_app
from natsrouter.embedded import NatsServer, free_port
from tests.conftest import ADMIN_TOKEN, LinkFactory
from tests.helpers.process import NATSROUTER, RouterProcess

pytestmark = pytest.mark.integration


@pytest.fixture
async def admin(nats_server: NatsServer, make_link: LinkFactory) -> AsyncIterator[str]:
    """The base URL of operator endpoints with fault injection on, behind ADMIN_TOKEN."""
    link = await make_link(
        [nats_server.url], nats_fault_injection_enabled=True, nats_fault_injection_token=ADMIN_TOKEN
    )
    server = HttpServer(build_app(link, fault_admin=True, admin_token=ADMIN_TOKEN), "127.0.0.1", 0)
    await server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def call(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, Any, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=body, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json(), resp.headers.get("WWW-Authenticate", "")


GOOD = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
DELAY = json.dumps({"target": "publish", "fault": {"kind": "delay", "delay_ms": 5}}).encode()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        f"Bearer {ADMIN_TOKEN}x",
        f"Bearer {ADMIN_TOKEN[:-1]}",
        f"Basic {ADMIN_TOKEN}",
        "Bearer",
    ],
    ids=["missing", "longer", "shorter", "basic", "empty"],
)
@pytest.mark.parametrize(("method", "path"), [("GET", ""), ("POST", ""), ("DELETE", "/publish")])
async def test_admin_without_the_token_is_401_and_changes_nothing(
    admin: str, authorization: str | None, method: str, path: str
) -> None:
    """No token, a wrong one or another scheme: 401 naming Authorization; no fault is set."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    status, body, challenge = await call(method, f"{admin}/admin/faults{path}", DELAY, headers)
    assert (status, body["error"]["field"], challenge) == (401, "Authorization", "Bearer")
    assert (await call("GET", f"{admin}/admin/faults", headers=GOOD))[1] == {"faults": {}}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_admin_post_accepts_only_json(admin: str, content_type: str) -> None:
    """A POST that is not application/json is 415, even with a JSON body."""
    headers = {**GOOD, "Content-Type": content_type}
    status, body, _ = await call("POST", f"{admin}/admin/faults", DELAY, headers)
    assert (status, body["error"]["field"]) == (415, "Content-Type")


@pytest.mark.parametrize(
    ("delay_ms", "status"),
    [(MAX_FAULT_DELAY_MS, 200), (MAX_FAULT_DELAY_MS + 1, 400), (10**30, 400)],
)
async def test_admin_bounds_delay_ms(admin: str, delay_ms: int, status: int) -> None:
    """A delay up to MAX_FAULT_DELAY_MS is set; a longer one is 400 naming fault.delay_ms."""
    body = json.dumps({"target": "publish", "fault": {"kind": "delay", "delay_ms": delay_ms}})
    code, doc, _ = await call("POST", f"{admin}/admin/faults", body.encode(), GOOD)
    assert code == status
    if status == 400:
        assert doc["error"]["field"] == "fault.delay_ms"


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def embedded(tmp: Path) -> dict[str, str]:
    return {
        "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
        "ROUTER_EMBEDDED_NATS_STORE_DIR": str(tmp / "store"),
    }


def test_admin_faults_is_absent_from_a_real_run_without_fault_injection(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """natsrouter run without fault injection: /admin/faults is 404, token or not."""
    router = RouterProcess(embedded(tmp_path), tmp_path)
    routers.append(router)
    router.wait(router.ready, what="ready")
    url = f"http://127.0.0.1:{router.metrics_port}/admin/faults"
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2)
        info.value.close()
        assert info.value.code == 404
    assert router.stop() == 0


def test_fault_injection_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    """Fault injection on, no token: run and check-config exit 2 naming the token key."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env = {**base, "ROUTER_NATS_FAULT_INJECTION_ENABLED": "true"}
    for command in ("run", "check-config"):
        done = subprocess.run(
            [NATSROUTER, command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2
        assert done.stderr.startswith(
            "natsrouter: configuration error: nats_fault_injection_token: required when "
        )


ACME_TOKEN = "acme-only-token-5f1c9d2e"
ANY_TOKEN = "any-tenant-token-8b3e7a10"


def write_tokens(path: Path) -> Path:
    path.write_text(
        f'[[token]]\ntoken = "{ACME_TOKEN}"\ntenants = ["acme"]\n\n'
        f'[[token]]\ntoken = "{ANY_TOKEN}"\ntenants = ["*"]\n'
    )
    return path


def decide(
    router: RouterProcess, token: str | None, tenant: str = "acme", header_tenant: str = ""
) -> tuple[int, dict[str, Any], str]:
    body = {
        "version": "1",
        "request_id": "r1",
        "tenant_id": tenant,
        "policy_id": "default",
        "task": {"type": "t", "payload": {}},
    }
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if header_tenant:
        headers["tenant_id"] = header_tenant
    request = urllib.request.Request(
        router.decide_url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), ""
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), exc.headers.get("WWW-Authenticate", "")


def test_decide_with_a_tokens_file_needs_a_token_for_the_tenant(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Missing or unknown token: 401 unauthenticated; token not for the tenant: 403 unauthorized."""
    (tmp_path / "policies" / "globex").mkdir(parents=True)
    (tmp_path / "policies" / "globex" / "default.json").write_text(
        json.dumps({"providers": [{"name": "p1", "weight": 1}]})
    )
    tokens = write_tokens(tmp_path / "tokens.toml")
    router = RouterProcess(
        {**embedded(tmp_path), "ROUTER_DECIDE_TOKENS_FILE": str(tokens)}, tmp_path
    )
    routers.append(router)
    router.wait(router.ready, what="ready")
    answers = {
        "missing": decide(router, None),
        "unknown": decide(router, ANY_TOKEN[:-1] + "x"),
        "other_tenant": decide(router, ACME_TOKEN, tenant="globex"),
        "other_tenant_by_header": decide(router, ACME_TOKEN, header_tenant="globex"),
        "own_tenant": decide(router, ACME_TOKEN),
        "any_tenant": decide(router, ANY_TOKEN, tenant="globex"),
    }
    summary = {
        name: (status, body.get("error", {}).get("code", "ok"), challenge)
        for name, (status, body, challenge) in answers.items()
    }
    assert summary == {
        "missing": (401, "unauthenticated", "Bearer"),
        "unknown": (401, "unauthenticated", "Bearer"),
        "other_tenant": (403, "unauthorized", ""),
        "other_tenant_by_header": (403, "unauthorized", ""),
        "own_tenant": (200, "ok", ""),
        "any_tenant": (200, "ok", ""),
    }
    assert router.metric("router_decide_total", outcome="unauthenticated") == 2
    assert router.metric("router_decide_total", outcome="unauthorized") == 2
    assert router.metric("router_decide_total", outcome="ok") == 2
    assert router.stop() == 0
    text = router.stderr_path.read_text()
    assert (ACME_TOKEN in text, ANY_TOKEN in text) == (False, False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[token]]\ntoken = "short"\ntenants = ["acme"]\n', "token #1: `token` must be at least"),
        (f'[[token]]\ntoken = "{ACME_TOKEN}"\n', "token #1: expected exactly `token` and"),
        (f'[[token]]\ntoken = "{ACME_TOKEN}"\ntenants = []\n', "token #1: `tenants` must be"),
        (f'token = "{ACME_TOKEN}"\n', "expected one or more [[token]] tables only"),
        (f'[[token]]\ntoken = "{ACME_TOKEN}\n', "is not valid TOML"),
    ],
)
def test_a_bad_tokens_file_exits_2_without_showing_a_token(
    tmp_path: Path, content: str, message: str
) -> None:
    """check-config names decide_tokens_file and the entry, never the token itself."""
    (tmp_path / "tokens.toml").write_text(content)
    base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    done = subprocess.run(
        [NATSROUTER, "check-config"],
        env={**base, "ROUTER_DECIDE_TOKENS_FILE": str(tmp_path / "tokens.toml")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("natsrouter: configuration error: decide_tokens_file: ")
    assert message in done.stderr
    assert ACME_TOKEN not in done.stderr


def test_requests_without_a_token_are_logged_at_most_once_per_interval(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Fifty decides without a token: fifty 401s counted, one ROUTER_DECIDE_REFUSED line."""
    tokens = write_tokens(tmp_path / "tokens.toml")
    router = RouterProcess(
        {**embedded(tmp_path), "ROUTER_DECIDE_TOKENS_FILE": str(tokens)}, tmp_path
    )
    routers.append(router)
    router.wait(router.ready, what="ready")
    assert {decide(router, None)[0] for _ in range(50)} == {401}
    assert router.metric("router_decide_total", outcome="unauthenticated") == 50
    assert router.stop() == 0
    refused = [
        (line["code"], line["suppressed"])
        for line in router.lines()
        if line.get("error_code") == "ROUTER_DECIDE_REFUSED"
    ]
    assert refused == [("unauthenticated", 0)]
