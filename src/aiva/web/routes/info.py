"""`GET /` and `GET /info`: who this service is, and how it runs.

With `security.api_key` set, `/info`'s detail (runtime, settings) needs the key, as
`/health`'s details do; without it `/info` answers the identity alone, as `/` does.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aiva.settings import mask_value, to_dict
from aiva.web.lifespan import app_state
from aiva.web.routes.health import check_key


async def root(request: Request) -> JSONResponse:
    service = app_state(request).settings.service
    return JSONResponse(
        {"service": service.name, "version": service.version, "environment": service.environment}
    )


async def info(request: Request) -> Response:
    state = app_state(request)
    allowed = await check_key(request, state.settings.security)
    if isinstance(allowed, Response):
        return allowed  # 429: too many wrong keys from this client
    if not allowed:
        return await root(request)
    settings = state.live.current
    body: dict[str, Any] = {
        "service": {
            "name": settings.service.name,
            "version": settings.service.version,
            "environment": settings.service.environment,
        },
        "build": {
            "python": sys.version.split()[0],
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
        },
        "runtime": {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": state.started_at.isoformat(),
            "uptime_seconds": round(time.monotonic() - state.started_monotonic, 3),
        },
        "settings_loaded_at": state.live.loaded_at.isoformat(),
        "settings_hash": state.live.digest,
        "settings": {name: mask_value(name, value) for name, value in to_dict(settings).items()},
    }
    return JSONResponse(body)


# `GET /` is the service's identity: create_app serves it; instrument() leaves the path
# to the app it instruments.
ROOT = Route("/", root, methods=["GET"])
ROUTES = [Route("/info", info, methods=["GET"])]
