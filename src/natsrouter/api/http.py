"""The operator's HTTP endpoints on ``metrics_port``: metrics, health, status, fault admin.

``/metrics`` (Prometheus text), ``/health/live`` and ``/health/ready`` (200 or 503 with a
JSON body), ``/status`` (the link's JSON document), and, only when
``nats_fault_injection_enabled``, ``/admin/faults`` to list, set and clear faults.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from natsrouter.link.faults import Fault, FaultSpecError, FaultTarget
from natsrouter.link.link import Link

_LINK: web.AppKey[Link] = web.AppKey("link", Link)


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
    """``POST {"target": "publish", "fault": {"kind": "error", "reason": "timeout"}}``."""
    link = request.app[_LINK]
    try:
        body = await request.json()
    except json.JSONDecodeError:
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
    try:
        fault = Fault.from_dict(spec)
    except FaultSpecError as exc:
        return _json({"error": {"field": f"fault.{exc.field}", "message": str(exc)}}, 400)
    link.inject(target, fault)
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


def build_app(link: Link, *, fault_admin: bool) -> web.Application:
    app = web.Application()
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
