"""Request context middleware: the request id and one structured access log line a request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiva.context import request_id_var
from aiva.web.routing import route_template

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only when it is short and plain, so it is safe in logs and headers.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")

access_logger = logging.getLogger("aiva.access")


def incoming_request_id(scope: Scope) -> str:
    """The caller's X-Request-ID when sane, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware: it costs a task and a stream per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope)
        token = request_id_var.set(request_id)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "%s %s %d",
                    scope["method"],
                    route_template(scope) or "(unmatched)",
                    status,
                    extra={
                        "http_method": scope["method"],
                        "http_route": route_template(scope),
                        "status_code": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    },
                )
            request_id_var.reset(token)
