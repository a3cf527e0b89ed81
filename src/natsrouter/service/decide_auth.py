"""Optional bearer-token auth of ``POST /v1/decide`` (``decide_tokens_file``).

Checked before the request is decided, so a refused request never causes an assignment:
a missing or unknown token is ``unauthenticated`` (401, with ``WWW-Authenticate: Bearer``);
a known token naming a tenant it may not act for is ``unauthorized`` (403), the code that
already means "tenant not allowed". The tenant is the one the decide path will use: the
``tenant_id`` header when present (headers win, CONTRACT §1), else the body's. A body that
cannot be read as a JSON object is left to the decide path, which refuses it in its own words.
Refusals are counted and logged by the decide service like any other, except that a request
without a valid token, which anyone can send, is logged at most once per 10 s (the line
counting the others in ``suppressed``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from natsrouter.auth import DecideTokens, bearer_token
from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.service.decide import DecideService


def _tenant_of(raw: bytes, header: str | None) -> str | None:
    if header:
        return header
    try:
        document: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    tenant = document.get("tenant_id") if isinstance(document, dict) else None
    return tenant if isinstance(tenant, str) else None


def require_tokens(
    app: web.Application, tokens: DecideTokens, service: DecideService, max_payload_size: int
) -> None:
    """Add the token check to the decide application ``app`` (before it starts)."""

    def refuse(error: RequestError, **headers: str) -> web.Response:
        # Counted per request, logged rate-limited per code (RouterEvents.decide_refused).
        status, body = service.refuse(error, "http")
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        tenants = tokens.tenants_for(bearer_token(request.headers.get("Authorization")))
        if tenants is None:
            error = RequestError(
                ErrorCode.UNAUTHENTICATED,
                "a valid bearer token is required",
                {"field": "Authorization"},
            )
            return refuse(error, **{"WWW-Authenticate": "Bearer"})
        try:
            raw = await request.read()  # kept by aiohttp: the handler reads the same bytes
        except web.HTTPRequestEntityTooLarge:
            return refuse(
                RequestError(
                    ErrorCode.INVALID_REQUEST,
                    f"payload is over the limit of {max_payload_size} bytes",
                    {"limit": max_payload_size},
                )
            )
        tenant = _tenant_of(raw, request.headers.get("tenant_id"))
        if tenant is not None and not tokens.allows(tenants, tenant):
            return refuse(
                RequestError(
                    ErrorCode.UNAUTHORIZED,
                    "the token may not act for this tenant",
                    {"field": "tenant_id"},
                )
            )
        return await handler(request)

    app.middlewares.append(check)
