"""An OpenAPI 3.1 description of the HTTP API on ``http_port``, served at ``/openapi.json``.

So HTTP clients can be generated and API fuzzers pointed at the Router. OpenAPI 3.1 schemas
are JSON Schema 2020-12, the dialect of the schemas the package ships, so the request body is
``decide_request.schema.json`` itself (read from the package, never copied), and the error
statuses come from ``ErrorCode``: the description cannot drift from what the code checks
and answers. tests/integration/test_openapi.py validates live answers against it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from aiohttp import web

from natsrouter import __version__
from natsrouter.routing import strict_json
from natsrouter.routing.decider import DecisionReason
from natsrouter.routing.messages import ErrorCode
from natsrouter.routing.strategies import Strategy

_NULLABLE_NUMBER = {"type": ["number", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}
_ASSIGNMENT_OUTCOMES = ["sent", "queued", "dropped", "rejected", "failed_open", "failed"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _shipped(name: str) -> dict[str, Any]:
    """A schema shipped in the package, as the Router checks it (its ``$id`` left out)."""
    text = resources.files("natsrouter.routing").joinpath(name).read_text()
    document: dict[str, Any] = json.loads(text)
    document.pop("$id", None)
    return document


def _schemas() -> dict[str, Any]:
    context = {
        "type": "object",
        "required": ["request_id", "trace_id"],
        "properties": {"request_id": _NULLABLE_STRING, "trace_id": _NULLABLE_STRING},
    }
    decision = {
        "type": "object",
        "required": [
            "provider_id",
            "priority",
            "expected_latency_ms",
            "expected_cost",
            "reason",
            "policy_id",
            "fallback_used",
        ],
        "properties": {
            "provider_id": {"type": "string"},
            "priority": {"type": "integer"},
            "expected_latency_ms": _NULLABLE_NUMBER,
            "expected_cost": _NULLABLE_NUMBER,
            "reason": {"enum": [r.value for r in DecisionReason]},
            "policy_id": {"type": "string"},
            "fallback_used": {"type": "boolean"},
            "assignment_id": {"type": "string"},
        },
    }
    assignment = {
        "type": "object",
        "required": ["assignment_id", "subject", "outcome"],
        "properties": {
            "assignment_id": {"type": "string"},
            "subject": {"type": "string"},
            "outcome": {"enum": _ASSIGNMENT_OUTCOMES},
            "stream": {"type": "string"},
            "seq": {"type": "integer"},
            "pending_id": {"type": "integer"},
            "reason": {"type": "string"},
        },
    }
    provider = {
        "type": "object",
        "required": [
            "provider_id",
            "weight",
            "priority",
            "breaker_state",
            "expected_latency_ms",
            "expected_cost",
            "in_flight",
        ],
        "properties": {
            "provider_id": {"type": "string"},
            "weight": {"type": "number"},
            "priority": {"type": "integer"},
            "breaker_state": {"enum": ["closed", "open", "half_open", None]},
            "expected_latency_ms": _NULLABLE_NUMBER,
            "expected_cost": _NULLABLE_NUMBER,
            "in_flight": {"type": "integer", "minimum": 0},
        },
    }
    rate_limit = {
        "type": ["object", "null"],
        "required": ["requests_per_second", "burst", "headroom"],
        "properties": {
            "requests_per_second": {"type": "number"},
            "burst": {"type": "integer"},
            "headroom": {"type": "integer", "minimum": 0},
        },
    }
    policy = {
        "type": "object",
        "required": ["tenant_id", "policy_id", "strategy", "rate_limit", "providers"],
        "properties": {
            "tenant_id": {"type": "string"},
            "policy_id": {"type": "string"},
            "strategy": {"enum": [s.value for s in Strategy]},
            "rate_limit": rate_limit,
            "providers": {"type": "array", "items": _ref("ProviderState")},
        },
    }
    return {
        "DecideRequest": _shipped("decide_request.schema.json"),
        "Context": context,
        "Decision": decision,
        "Assignment": assignment,
        "DecideResponse": {
            "type": "object",
            "required": ["ok", "decision", "context"],
            "properties": {
                "ok": {"const": True},
                "decision": _ref("Decision"),
                "context": _ref("Context"),
                "assignment": _ref("Assignment"),
            },
        },
        "ErrorResponse": {
            "type": "object",
            "required": ["ok", "error", "context"],
            "properties": {
                "ok": {"const": False},
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"enum": [c.value for c in ErrorCode]},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                },
                "context": _ref("Context"),
            },
        },
        "ProviderState": provider,
        "PolicyState": policy,
        "ProvidersView": {
            "type": "object",
            "required": ["instance_id", "policies"],
            "properties": {
                "instance_id": {"type": "string"},
                "policies": {"type": "array", "items": _ref("PolicyState")},
            },
        },
    }


def _error_responses(codes: list[ErrorCode]) -> dict[str, Any]:
    """One response per status, naming the codes answered with it."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(code.http_status, []).append(code.value)
    responses: dict[str, Any] = {}
    for status, names in sorted(by_status.items()):
        response: dict[str, Any] = {
            "description": "ErrorResponse: " + ", ".join(f"`{n}`" for n in names),
            "content": {"application/json": {"schema": _ref("ErrorResponse")}},
        }
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {
                    "description": "seconds until trying again makes sense",
                    "schema": {"type": "integer", "minimum": 1},
                }
            }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"const": "Bearer"}}}
        responses[str(status)] = response
    return responses


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The description (built once; the same object every call)."""
    filter_parameters = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("tenant_id", "policy_id")
    ]
    view_errors = [ErrorCode.INVALID_REQUEST, ErrorCode.UNAUTHENTICATED]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "natsrouter",
            "version": __version__,
            "description": "Routes jobs to providers: which provider should run this task. "
            "The same decide is served over NATS request-reply (docs/router.md).",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": {
            "/v1/decide": {
                "post": {
                    "operationId": "decide",
                    "summary": "Decide which provider runs a task; optionally push the assignment",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("DecideRequest")}},
                    },
                    "responses": {
                        "200": {
                            "description": "DecideResponse",
                            "content": {"application/json": {"schema": _ref("DecideResponse")}},
                        },
                        **_error_responses(list(ErrorCode)),
                    },
                }
            },
            "/v1/providers": {
                "get": {
                    "operationId": "getProviders",
                    "summary": "Breaker state, estimates, assignments in flight and rate-limit "
                    "headroom per tenant, policy and provider (this Router's)",
                    "parameters": filter_parameters,
                    "responses": {
                        "200": {
                            "description": "ProvidersView",
                            "content": {"application/json": {"schema": _ref("ProvidersView")}},
                        },
                        **_error_responses(view_errors),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This description",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        # A token is needed only when decide_tokens_file is set.
        "security": [{}, {"bearer": []}],
    }


def add_route(app: web.Application) -> None:
    """``GET /openapi.json`` on the decide application ``app``."""
    body = strict_json.dumps(openapi_document())

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/openapi.json", serve)
