"""/openapi.json: an OpenAPI 3.1 description that matches the shipped schemas and live answers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from natsrouter.embedded import NatsServer
from natsrouter.routing.messages import ErrorCode
from tests.conftest import RouterFactory, write_policy
from tests.integration.test_router_decide import decide_request

pytestmark = pytest.mark.integration


async def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", data=data) as resp,
    ):
        return resp.status, json.loads(await resp.read())


def check(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``body`` is valid for the response the description gives for ``status``."""
    response = spec["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], f"{method} {path} {status}"


async def test_description_is_served_and_uses_the_shipped_schemas(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """openapi 3.1.0; every schema is valid 2020-12; DecideRequest is the shipped schema."""
    router = await make_router([nats_server.url])
    status, spec = await call(router.http.port, "GET", "/openapi.json")
    assert (status, spec["openapi"]) == (200, "3.1.0")
    for schema in spec["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises on an invalid schema
    shipped = json.loads(
        resources.files("natsrouter.routing").joinpath("decide_request.schema.json").read_text()
    )
    del shipped["$id"]
    assert spec["components"]["schemas"]["DecideRequest"] == shipped
    decide = spec["paths"]["/v1/decide"]["post"]["responses"]
    assert set(decide) == {"200"} | {str(code.http_status) for code in ErrorCode}
    codes = spec["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    assert codes["properties"]["code"]["enum"] == [code.value for code in ErrorCode]
    assert set(decide["429"]["headers"]) == {"Retry-After"}


async def test_live_answers_match_the_description(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Decide 200 (with an assignment), 400, 404, 422, 429 and the providers view 200/400."""
    write_policy(
        policies_dir,
        "acme",
        "limited",
        {
            "providers": [{"name": "a", "weight": 1, "expected_cost": 1}],
            "rate_limit": {"enabled": True, "requests_per_second": 0.01, "burst": 1},
        },
    )
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    port = router.http.port
    _, spec = await call(port, "GET", "/openapi.json")
    limited = decide_request(request_id="r4", policy_id="limited")
    answers = [
        await call(port, "POST", "/v1/decide", decide_request(push_assignment=True)),
        await call(port, "POST", "/v1/decide", {"version": "1"}),
        await call(port, "POST", "/v1/decide", decide_request(request_id="r3", policy_id="nope")),
        await call(
            port, "POST", "/v1/decide", {**limited, "constraints": {"max_cost": 0.5}}
        ),  # takes the only token, then finds the constraint unmet
        await call(port, "POST", "/v1/decide", {**limited, "request_id": "r5"}),
    ]
    assert [status for status, _ in answers] == [200, 400, 404, 422, 429]
    assert answers[0][1]["assignment"]["outcome"] == "sent"
    for status, body in answers:
        check(spec, "/v1/decide", "post", status, body)
    status, view = await call(port, "GET", "/v1/providers")
    check(spec, "/v1/providers", "get", status, view)
    assert {p["policy_id"] for p in view["policies"]} == {"default", "limited"}
    status, refused = await call(port, "GET", "/v1/providers?x=1")
    assert status == 400
    check(spec, "/v1/providers", "get", status, refused)
