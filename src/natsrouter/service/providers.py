"""A view of the providers: what this Router knows about each provider of each policy.

Served as ``GET /v1/providers`` on the HTTP port (behind the decide tokens when
``decide_tokens_file`` is set: a token sees only the tenants it may act for) and on the NATS
request subject ``beamline.router.v1.admin.get_circuit_breaker_states`` (the earlier Router's
admin subject; every Router answers, so a plain request gets the first answer and
``instance_id`` says whose). Per tenant and policy: the strategy and the rate limit with its
headroom; per provider: breaker state, expected latency and cost, assignments in flight.

Everything in it is this process's own state (docs/policies.md says what is per Router).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from natsrouter.auth import DecideTokens, bearer_token
from natsrouter.link.link import Link
from natsrouter.link.subscriptions import Subscription
from natsrouter.link.transport import InboundMessage
from natsrouter.routing import strict_json
from natsrouter.routing.decider import Decider
from natsrouter.routing.messages import ErrorCode, RequestError, error_response
from natsrouter.routing.policy import Policy

#: The NATS request subject of the view (not in the queue group: every Router answers).
ADMIN_SUBJECT = "beamline.router.v1.admin.get_circuit_breaker_states"
_FILTERS = ("tenant_id", "policy_id")


class ProvidersView:
    """Builds the view from the decider's policies, health and rate limits."""

    def __init__(self, decider: Decider, instance_id: str) -> None:
        self._decider = decider
        self.instance_id = instance_id

    def document(
        self,
        *,
        tenant_id: str | None = None,
        policy_id: str | None = None,
        allowed: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """The view, for one tenant or policy when named, and only the ``allowed`` tenants."""
        policies = sorted(self._decider.policies.all(), key=lambda p: (p.tenant_id, p.policy_id))
        return {
            "instance_id": self.instance_id,
            "policies": [
                self._policy(p)
                for p in policies
                if (tenant_id is None or p.tenant_id == tenant_id)
                and (policy_id is None or p.policy_id == policy_id)
                and (allowed is None or DecideTokens.allows(allowed, p.tenant_id))
            ],
        }

    def _policy(self, policy: Policy) -> dict[str, Any]:
        health = self._decider.health
        limit = policy.rate_limit
        headroom = self._decider.rate_limits.headroom(policy.tenant_id, policy.policy_id, limit)
        providers = []
        for provider in policy.providers:
            latency, cost = health.expected(provider.name, provider)
            state = health.state(provider.name) if policy.circuit_breaker.enabled else None
            providers.append(
                {
                    "provider_id": provider.name,
                    "weight": provider.weight,
                    "priority": provider.priority,
                    "breaker_state": state.value if state is not None else None,
                    "expected_latency_ms": latency,
                    "expected_cost": cost,
                    "in_flight": health.in_flight.count(provider.name),
                }
            )
        return {
            "tenant_id": policy.tenant_id,
            "policy_id": policy.policy_id,
            "strategy": policy.strategy.value,
            "rate_limit": None
            if headroom is None
            else {
                "requests_per_second": limit.requests_per_second,
                "burst": limit.burst,
                "headroom": headroom,
            },
            "providers": providers,
        }


def _filters(raw: bytes) -> dict[str, str]:
    """``tenant_id`` / ``policy_id`` of a request body (empty: everything); names the field."""
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        raise RequestError(
            ErrorCode.INVALID_REQUEST, "expected a JSON object or nothing", {"field": "(body)"}
        )
    for key, value in document.items():
        if key not in _FILTERS or not isinstance(value, str):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"{key}: expected one of {', '.join(_FILTERS)}, a string",
                {"field": key},
            )
    return dict(document)


def add_http_route(app: web.Application, view: ProvidersView, tokens: DecideTokens | None) -> None:
    """``GET /v1/providers[?tenant_id=&policy_id=]`` on the decide application ``app``.

    With tokens, the app's token check (decide_auth) has already refused a request without a
    valid one; the view then shows only the tenants the token may act for.
    """

    async def providers(request: web.Request) -> web.Response:
        allowed = None
        if tokens is not None:
            allowed = tokens.tenants_for(bearer_token(request.headers.get("Authorization")))
            allowed = allowed if allowed is not None else frozenset()
        query = request.rel_url.query
        unknown = sorted(set(query) - set(_FILTERS))
        if unknown:
            error = RequestError(
                ErrorCode.INVALID_REQUEST,
                f"{unknown[0]}: unknown parameter; expected {', '.join(_FILTERS)}",
                {"field": unknown[0]},
            )
            return _response(400, error_response(error))
        document = view.document(
            tenant_id=query.get("tenant_id"), policy_id=query.get("policy_id"), allowed=allowed
        )
        return _response(200, document)

    app.router.add_get("/v1/providers", providers)


def _response(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        body=strict_json.dumps(body), status=status, content_type="application/json"
    )


class NatsProvidersAdmin:
    """Answers ``ADMIN_SUBJECT`` requests with the view (an ErrorResponse for a bad body)."""

    def __init__(self, link: Link, view: ProvidersView) -> None:
        self._link = link
        self._view = view
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self._link.subscribe(ADMIN_SUBJECT, self._on_request)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._link.unsubscribe(self._subscription)
            self._subscription = None

    async def _on_request(self, msg: InboundMessage) -> None:
        if not msg.reply:
            return  # nobody to answer
        try:
            filters = _filters(msg.data)
            body = self._view.document(
                tenant_id=filters.get("tenant_id"), policy_id=filters.get("policy_id")
            )
        except RequestError as err:
            body = error_response(err)
        # Sent now or dropped, never queued: a late answer reaches an inbox nobody reads.
        await self._link.reply(msg.reply, strict_json.dumps(body))
