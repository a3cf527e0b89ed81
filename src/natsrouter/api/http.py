"""The operator's HTTP endpoints on ``metrics_port``: metrics, health, status, fault admin.

``/metrics`` (Prometheus text), ``/health/live`` and ``/health/ready`` (200 or 503 with a
JSON body), ``/status`` (the link's JSON document), and, only when
``nats_fault_injection_enabled``, ``/admin/faults`` to list, set and clear faults. The admin
endpoint can stall or break the link, so every call to it needs
``Authorization: Bearer <nats_fault_injection_token>`` (401 otherwise), a POST must be
``application/json`` (415 otherwise), and a delay is at most ``MAX_FAULT_DELAY_MS``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from natsrouter.auth import bearer_token, token_matches
from natsrouter.link.faults import Fault, FaultSpecError, FaultTarget
from natsrouter.link.link import Link
from natsrouter.observability.logging import RateLimit, get_logger

_LINK: web.AppKey[Link] = web.AppKey("link", Link)
#: The longest delay the admin endpoint sets: longer would stall the link past any timeout.
MAX_FAULT_DELAY_MS = 60_000
log = get_logger("natsrouter.http")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=None))


async def _metrics(request: web.Request) -> web.Response:
    link = request.app[_LINK]
    body = generate_latest(link.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _live(request: web.Request) -> web.Response:
    alive = request.app[_LINK].alive
    return _json({"status": "alive" if alive else "dead"}, 200 if alive else 503)


async def _ready(request: web.Request) -> web.Response:
    link = request.app[_LINK]
    return _json({"ready": link.ready, "state": link.state.value}, 200 if link.ready else 503)


async def _status(request: web.Request) -> web.Response:
    return _json(request.app[_LINK].status())


def _faults_doc(link: Link) -> dict[str, Any]:
    faults = link.faults.active() if link.faults else {}
    return {"faults": {t.value: f.to_dict() for t, f in faults.items()}}


async def _list_faults(request: web.Request) -> web.Response:
    return _json(_faults_doc(request.app[_LINK]))


async def _set_fault(request: web.Request) -> web.Response:
    """``POST {"target": "publish", "fault": {"kind": "error", "reason": "timeout"}}``;
    ``"subject": "a.>"`` in the fault limits it to matching subjects."""
    link = request.app[_LINK]
    if request.content_type != "application/json":
        message = "expected application/json"
        return _json({"error": {"field": "Content-Type", "message": message}}, 415)
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return _json({"error": {"field": "body", "message": "expected a JSON object"}}, 400)
    if not isinstance(body, dict):
        return _json({"error": {"field": "body", "message": "expected a JSON object"}}, 400)
    try:
        target = FaultTarget(str(body.get("target")))
    except ValueError:
        allowed = ", ".join(t.value for t in FaultTarget)
        return _json({"error": {"field": "target", "message": f"expected one of {allowed}"}}, 400)
    spec = body.get("fault")
    if not isinstance(spec, dict):
        return _json({"error": {"field": "fault", "message": "expected a JSON object"}}, 400)
    delay = spec.get("delay_ms")
    if (
        isinstance(delay, int | float)
        and not isinstance(delay, bool)
        and delay > MAX_FAULT_DELAY_MS
    ):
        message = f"must be <= {MAX_FAULT_DELAY_MS}"
        return _json({"error": {"field": "fault.delay_ms", "message": message}}, 400)
    try:
        link.inject(target, Fault.from_dict(spec))
    except FaultSpecError as exc:
        return _json({"error": {"field": f"fault.{exc.field}", "message": str(exc)}}, 400)
    return _json(_faults_doc(link))


async def _clear_faults(request: web.Request) -> web.Response:
    link = request.app[_LINK]
    raw = request.match_info.get("target")
    target: FaultTarget | None = None
    if raw is not None:
        try:
            target = FaultTarget(raw)
        except ValueError:
            return _json({"error": {"field": "target", "message": f"unknown target {raw}"}}, 404)
    link.clear_faults(target)
    return _json(_faults_doc(link))


def _admin_guard(token: str) -> Middleware:
    """Every /admin/ request must present the admin token; refusals logged, rate-limited."""
    limit = RateLimit()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/admin/"):
            return await handler(request)
        if not token_matches(bearer_token(request.headers.get("Authorization")), token):
            suppressed = limit.allow()
            if suppressed is not None:
                log.warning(
                    "admin request refused: no valid bearer token",
                    path=request.path,
                    remote=request.remote,
                    suppressed=suppressed,
                )
            body = {
                "error": {"field": "Authorization", "message": "a valid bearer token is required"}
            }
            response = _json(body, 401)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return await handler(request)

    return guard


def build_app(link: Link, *, fault_admin: bool, admin_token: str = "") -> web.Application:
    """The operator endpoints; ``/admin/faults`` only with ``fault_admin``, behind the token."""
    if fault_admin and not admin_token:
        raise ValueError("the fault admin endpoint needs a token")
    app = web.Application(middlewares=[_admin_guard(admin_token)] if fault_admin else [])
    app[_LINK] = link
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health/live", _live)
    app.router.add_get("/health/ready", _ready)
    app.router.add_get("/status", _status)
    if fault_admin:
        app.router.add_get("/admin/faults", _list_faults)
        app.router.add_post("/admin/faults", _set_fault)
        app.router.add_delete("/admin/faults", _clear_faults)
        app.router.add_delete("/admin/faults/{target}", _clear_faults)
    return app


class HttpServer:
    """Serves ``build_app`` on one host and port; ``port`` is the bound one (0 picks)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        await self._runner.cleanup()
