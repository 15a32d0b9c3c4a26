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
from aiva.web.rate_limit import KEY_FAILURE_QUOTA, limiter_of

NO_STORE = {"Cache-Control": "no-store"}
HEALTH_JSON = "application/health+json"
WITHHELD = "reason withheld"


async def check_key(
    request: Request, security: SecuritySettings, *, probe: bool = False
) -> bool | Response:
    """The API key check (in constant time), wrong keys counted, logged (sampled) and
    throttled per client (aiva.web.rate_limit).

    True: no key configured, or the right one. False: no key sent (no attempt), or a
    wrong one. A Response (429 with Retry-After and the RateLimit fields): the client
    sent too many wrong keys lately; it is not even compared then. A probe is never
    answered 429: for it a throttled client's key counts as absent.
    """
    if security.api_key is None:
        return True
    given = request.headers.get(security.api_key_header)
    if given is None:
        return False
    limiter = limiter_of(request.scope)
    if limiter is not None:
        refused = await limiter.key_refusal(request.scope)
        if refused is not None:
            return False if probe else KEY_FAILURE_QUOTA.refusal(refused)
    if hmac.compare_digest(given.encode(), security.api_key.encode()):
        return True
    if limiter is not None:
        refused = await limiter.key_failed(request.scope)
        if refused is not None and not probe:
            return KEY_FAILURE_QUOTA.refusal(refused)
    return False


def _respond(
    request: Request,
    state: AppState,
    results: list[CheckResult],
    status: Status,
    details: bool,
) -> Response:
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
    details = await check_key(request, state.settings.security)
    if isinstance(details, Response):
        return details
    results = state.health.results()
    return _respond(request, state, results, aggregate(results), details)


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
        details = await check_key(request, state.settings.security, probe=True)
        results, status = _probe_status(state, probe, [])
        return _respond(request, state, results, status, details is True)

    return endpoint


def _kube(probe: Probe):  # type: ignore[no-untyped-def]
    """`/livez`, `/readyz` (and `/NAME`) as the Kubernetes API server answers them."""

    async def endpoint(request: Request) -> Response:
        state = app_state(request)
        name = request.path_params.get("name")
        members = [c.name for c in state.health.checks if probe in c.probes]
        verbose = "verbose" in request.query_params
        reasons = await check_key(request, state.settings.security, probe=True) is True
        if name is not None:
            if name not in members:
                return PlainTextResponse(f"no {probe} check {name}\n", 404, NO_STORE)
            return _one_check(state, probe, name, verbose, reasons)
        asked = request.query_params.getlist("exclude")
        results, status = _probe_status(state, probe, asked)
        code = http_status(status)
        if code == 200 and not verbose:
            return PlainTextResponse("ok", code, NO_STORE)
        # The API server lists every check on a failure even without ?verbose, but never
        # the reasons there: those need ?verbose (and the key, when one is set).
        reasons = reasons and verbose
        by_name = {r.name: r for r in results}
        lines = []
        for member in members:
            if member in asked:
                lines.append(f"[+]{member} excluded: ok")
            elif member in by_name:
                lines.append(_line(by_name[member], reasons))
        if probe == "ready" and state.health.draining:
            lines.append(f"[-]shutdown failed: {'draining' if reasons else WITHHELD}")
        unmatched = sorted(set(asked) - set(members))
        if unmatched:
            quoted = ", ".join(f'"{n}"' for n in unmatched)
            lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}")
        lines.append(f"{probe}z check {'passed' if code == 200 else 'failed'}")
        return PlainTextResponse("\n".join(lines) + "\n", code, NO_STORE)

    return endpoint


def _one_check(state: AppState, probe: Probe, name: str, verbose: bool, reasons: bool) -> Response:
    """`/readyz/NAME`: that check's own result, critical or not (the API server's
    per-check handler: `ok`, or `internal server error: <reason>`)."""
    result = next((r for r in state.health.results(probe) if r.name == name), None)
    if result is None:  # removed by a reload since the route matched
        return PlainTextResponse(f"no {probe} check {name}\n", 404, NO_STORE)
    code = 200 if _passes(result) else 503
    if verbose:
        verdict = "passed" if code == 200 else "failed"
        return PlainTextResponse(
            f"{_line(result, reasons)}\n{probe}z check {verdict}\n", code, NO_STORE
        )
    if code == 200:
        return PlainTextResponse("ok", code, NO_STORE)
    reason = result.message if reasons else WITHHELD
    return PlainTextResponse(f"internal server error: {reason}\n", code, NO_STORE)


def _passes(result: CheckResult) -> bool:
    return http_status(result.status) == 200


def _line(result: CheckResult, reasons: bool) -> str:
    if _passes(result):
        return f"[+]{result.name} ok"
    return f"[-]{result.name} failed: {result.message if reasons else WITHHELD}"


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
