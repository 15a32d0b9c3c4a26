"""The request middleware: request id, server span, HTTP metrics and one access-log line."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

# The helper Route.matches uses (no public one), as aiva.web.routing does.
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiva.context import request_id_var
from aiva.telemetry.http import SERVER_SPAN_SCOPE_KEY, HttpTelemetry, normalise_method, read_headers
from aiva.telemetry.logs import note_request_ids
from aiva.web.fastapi_support import TELEMETRY_SCOPE_KEY as FASTAPI_TELEMETRY
from aiva.web.routing import MountTemplates, route_template

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only when it is short and plain, so it is safe in logs and headers.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id_from(value: bytes | None) -> str:
    """The caller's X-Request-ID when sane, else a new one."""
    if value is not None and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    # 128 random bits as 32 hex digits, like a uuid4's hex but without its syscall and
    # object: an id needs to be unique, not unpredictable.
    return f"{random.getrandbits(128):032x}"


class RequestMiddleware:
    """Pure ASGI, one per app: everything aiva does per request happens here, once.

    (BaseHTTPMiddleware would cost a task and a memory stream per request.)
    """

    def __init__(self, app: ASGIApp, mounts: MountTemplates | None = None) -> None:
        """`mounts`: the app's Mounts, for route templates under a parametrized one."""
        self.app = app
        self.access_log = AccessLog()
        self.mounts = mounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # FastAPI apps mounted below keep out here too
                scope.setdefault(FASTAPI_TELEMETRY, None)
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        aiva_state = state.get("aiva")
        http: HttpTelemetry | None = aiva_state.http if aiva_state is not None else None
        if scope.get(FASTAPI_TELEMETRY) is not None:
            http = None  # an outer FastAPI app's own telemetry has this request's span
        else:
            scope[FASTAPI_TELEMETRY] = None  # and FastAPI apps mounted below keep out
        raw_request_id, carrier = read_headers(scope["headers"])
        request_id = request_id_from(raw_request_id)
        request_token = request_id_var.set(request_id)
        method = normalise_method(scope["method"])
        span: Any = None
        span_token: object = None
        # The path the routes see (without --root-path): the one excluded_paths names.
        quiet = http is not None and http.excluded(get_route_path(scope))
        if (
            http is not None
            and http.make_spans
            and not quiet
            and not scope.get(SERVER_SPAN_SCOPE_KEY)
        ):
            scope[SERVER_SPAN_SCOPE_KEY] = True
            span, span_token = http.start_span(method, scope, carrier)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        error: BaseException | None = None
        active_key = (method, scope.get("scheme", "http"))
        if http is not None:
            http.active[active_key] += 1
        entry_root = scope.get("root_path", "")
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            error = exc
            # The server logs it after the span and request id below are gone.
            note_request_ids(exc, scope, request_id)
            raise
        finally:
            seconds = time.perf_counter() - started
            mounts = self.mounts
            template_root = (
                mounts.root(scope, entry_root) if mounts is not None and mounts.needed() else None
            )
            route = route_template(scope, template_root)
            # Logged while the span is still current, so the line carries its trace id.
            self.access_log.write(method, route, status, seconds, quiet)
            if http is not None:
                http.active[active_key] -= 1
                http.record(method, active_key[1], route, status, seconds)
                if span is not None:
                    http.end_span(span, span_token, method, route, status, error)
            request_id_var.reset(request_token)


class AccessLog:
    """The access line: one `aiva.access` record a request, at INFO.

    Probe and metrics requests are logged at DEBUG: a kubelet probing every few
    seconds must not drown the access log.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("aiva.access")

    def write(
        self, method: str, route: str | None, status: int, seconds: float, quiet: bool
    ) -> None:
        level = logging.DEBUG if quiet and status < 500 else logging.INFO
        if not self._logger.isEnabledFor(level):
            return
        # makeRecord + handle: Logger.log would walk the stack for a caller that is
        # always this method, once a request.
        logger = self._logger
        record = logger.makeRecord(
            logger.name,
            level,
            __file__,
            0,
            "%s %s %d",
            (method, route or "(unmatched)", status),
            None,
            "write",
        )
        # As `extra=` would set them (the formatters find them as the record's extras).
        record.__dict__.update(
            http_method=method,
            http_route=route,
            status_code=status,
            duration_ms=round(seconds * 1000, 3),
        )
        self._logger.handle(record)
