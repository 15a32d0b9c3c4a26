"""`GET /metrics`: the Prometheus exposition of every OpenTelemetry metric."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from aiva.web.lifespan import app_state
from aiva.web.routes.health import check_key


async def metrics(request: Request) -> Response:
    """Text format 0.0.4, or OpenMetrics when the Accept header asks for it (Prometheus does)."""
    state = app_state(request)
    allowed = await check_key(request, state.settings.security)
    if isinstance(allowed, Response):
        return allowed  # 429: too many wrong keys from this client
    if not allowed:
        return Response("the API key is missing or wrong\n", 401, {"Cache-Control": "no-store"})
    registry = state.telemetry.registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    # Collection runs every observable callback (psutil reads among them): off the loop.
    body = await run_in_threadpool(encoder, registry)
    return Response(body, media_type=content_type)
