"""Health endpoints: the report, the probes, and the Kubernetes-style /livez and /readyz."""

from __future__ import annotations

import hmac
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from aiva.health.model import CheckResult, Probe, Status, aggregate, http_status
from aiva.health.report import ietf_report, report
from aiva.settings.model import SecuritySettings
from aiva.web.lifespan import AppState, app_state

NO_STORE = {"Cache-Control": "no-store"}
HEALTH_JSON = "application/health+json"


def key_allowed(request: Request, security: SecuritySettings) -> bool:
    """No key configured, or the right one in the header (compared in constant time)."""
    if security.api_key is None:
        return True
    given = request.headers.get(security.api_key_header, "")
    return hmac.compare_digest(given.encode(), security.api_key.encode())


def _respond(
    request: Request, state: AppState, results: list[CheckResult], status: Status
) -> Response:
    details = key_allowed(request, state.settings.security)
    code = http_status(status)
    service = state.settings.service
    if HEALTH_JSON in request.headers.get("accept", ""):
        body = ietf_report(results, status, service.version, service.name, details)
        return JSONResponse(body, code, NO_STORE, HEALTH_JSON)
    if not details:
        return JSONResponse({"status": status.value}, code, NO_STORE)
    uptime = time.monotonic() - state.started_monotonic
    return JSONResponse(report(results, status, service.version, uptime, True), code, NO_STORE)


async def health(request: Request) -> Response:
    state = app_state(request)
    results = state.health.results()
    return _respond(request, state, results, aggregate(results))


def _probe_status(
    state: AppState, probe: Probe, exclude: list[str]
) -> tuple[list[CheckResult], Status]:
    runner = state.health
    results = runner.results(probe, exclude)
    if probe == "ready" and runner.draining:
        return results, Status.UNHEALTHY  # shutting down: take no new traffic
    if probe == "startup" and not runner.started:
        return results, Status.UNKNOWN
    return results, aggregate(results)


def _probe(probe: Probe):  # type: ignore[no-untyped-def]
    async def endpoint(request: Request) -> Response:
        state = app_state(request)
        results, status = _probe_status(state, probe, [])
        return _respond(request, state, results, status)

    return endpoint


def _kube(probe: Probe):  # type: ignore[no-untyped-def]
    """`/livez`, `/readyz` (and `/NAME`): plain text, `?verbose`, `?exclude=NAME`."""

    async def endpoint(request: Request) -> Response:
        state = app_state(request)
        name = request.path_params.get("name")
        exclude = request.query_params.getlist("exclude")
        if name is not None:
            if name not in {c.name for c in state.health.checks if probe in c.probes}:
                return PlainTextResponse(f"no {probe} check {name}\n", 404, NO_STORE)
            exclude = [c.name for c in state.health.checks if c.name != name]
        results, status = _probe_status(state, probe, exclude)
        code = http_status(status)
        verdict = "passed" if code == 200 else "failed"
        if "verbose" not in request.query_params:
            return PlainTextResponse("ok" if code == 200 else verdict, code, NO_STORE)
        details = key_allowed(request, state.settings.security)
        lines = [_line(r, details) for r in results]
        if probe == "ready" and state.health.draining:
            lines.append("[-]shutdown failed: draining")
        lines.append(f"{probe}z check {verdict}")
        return PlainTextResponse("\n".join(lines) + "\n", code, NO_STORE)

    return endpoint


def _line(result: CheckResult, details: bool) -> str:
    if result.status in (Status.HEALTHY, Status.DEGRADED):
        return f"[+]{result.name} ok"
    reason = f": {result.message}" if details else ""
    return f"[-]{result.name} failed{reason}"


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/health/live", _probe("live"), methods=["GET"]),
    Route("/health/ready", _probe("ready"), methods=["GET"]),
    Route("/ready", _probe("ready"), methods=["GET"]),
    Route("/health/startup", _probe("startup"), methods=["GET"]),
    Route("/livez", _kube("live"), methods=["GET"]),
    Route("/readyz", _kube("ready"), methods=["GET"]),
    Route("/livez/{name}", _kube("live"), methods=["GET"]),
    Route("/readyz/{name}", _kube("ready"), methods=["GET"]),
]
