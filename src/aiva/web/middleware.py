"""The request middleware: request id, server span, HTTP metrics and one access-log line."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiva.context import request_id_var
from aiva.telemetry.http import (
    CONTENT_LENGTH,
    SERVER_SPAN_SCOPE_KEY,
    HttpTelemetry,
    normalise_method,
    read_headers,
)
from aiva.telemetry.logs import note_request_ids
from aiva.web.fastapi_support import READS_ROUTE_STATE_KEY
from aiva.web.fastapi_support import TELEMETRY_SCOPE_KEY as FASTAPI_TELEMETRY

# The helper Route.matches uses (no public one), as aiva.web.routing does.
from aiva.web.paths import route_path
from aiva.web.routing import MountTemplates, route_template
from aiva.web.shedding import Shedding, on_startup

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

    def __init__(
        self, app: ASGIApp, mounts: MountTemplates | None = None, reads_route_state: bool = False
    ) -> None:
        """`mounts`: the app's Mounts, for route templates under a parametrized one;
        `reads_route_state`: FastAPI's router state may be read (aiva.fast.fastapi)."""
        self.app = app
        self.reads_route_state = reads_route_state
        self.access_log = AccessLog()
        self.mounts = mounts
        # Load shedding (aiva.web.shedding): requests in flight, and the limit, known
        # once the lifespan has started.
        self.shedding = Shedding()
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # FastAPI apps mounted below keep out here too
                scope.setdefault(FASTAPI_TELEMETRY, None)
            elif scope["type"] == "lifespan" and "state" in scope:
                send = on_startup(send, lambda: self.shedding.started(scope["state"]))
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.shedding.limit and not self.shedding.exempt(scope):
            await self.shedding.refuse(send, request_id_from(read_headers(scope["headers"])[0]))
            return
        state = scope.get("state") or {}
        aiva_state = state.get("aiva")
        http: HttpTelemetry | None = aiva_state.http if aiva_state is not None else None
        if scope.get(FASTAPI_TELEMETRY) is not None:
            http = None  # an outer FastAPI app's own telemetry has this request's span
        else:
            scope[FASTAPI_TELEMETRY] = None  # and FastAPI apps mounted below keep out
        if self.reads_route_state:
            scope[READS_ROUTE_STATE_KEY] = True
        # Host, User-Agent, ... for the span's attributes, gathered in the same pass.
        headers: dict[bytes, bytes] = {}
        if http is not None:
            raw_request_id, carrier = read_headers(
                scope["headers"], headers, http.propagation_headers
            )
            method = http.method_of(scope["method"])
            scheme = http.scheme_of(scope, headers)
        else:
            raw_request_id, carrier = read_headers(scope["headers"])
            method = normalise_method(scope["method"])
            scheme = scope.get("scheme", "http")
        request_id = request_id_from(raw_request_id)
        request_token = request_id_var.set(request_id)
        span: Any = None
        span_token: object = None
        # The path the routes see (without --root-path): the one excluded_paths names.
        quiet = http is not None and http.excluded(route_path(scope))
        if (
            http is not None
            and http.make_spans
            and not quiet
            and not scope.get(SERVER_SPAN_SCOPE_KEY)
            and not http.url_excluded(scope, headers, scheme)
        ):
            scope[SERVER_SPAN_SCOPE_KEY] = True
            span, span_token = http.start_span(method, scope, carrier, headers, scheme)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        error: BaseException | None = None
        active_key = (method, scheme)
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

        inner_receive: Receive = receive
        inner_send: Send = send_with_request_id
        bodies = None
        if http is not None and http.measure_bodies:  # telemetry.http.body_size_metrics
            bodies = BodyBytes(receive, send_with_request_id, headers.get(CONTENT_LENGTH))
            inner_send = bodies.send
            if bodies.counts_request:
                inner_receive = bodies.receive

        self.in_flight += 1
        try:
            await self.app(scope, inner_receive, inner_send)
        except Exception as exc:
            error = exc
            # The server logs it after the span and request id below are gone.
            note_request_ids(exc, scope, request_id)
            raise
        finally:
            self.in_flight -= 1
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
                http.record(
                    method,
                    scheme,
                    route,
                    status,
                    seconds,
                    scope.get("http_version"),
                    error,
                    None if bodies is None else bodies.request,
                    None if bodies is None else bodies.response,
                    span,
                )
                if span is not None:
                    http.end_span(span, span_token, method, route, status, error)
            request_id_var.reset(request_token)


class BodyBytes:
    """The request's and the response's body sizes, for the body size histograms.

    The request's is its Content-Length when declared, else (chunked) the bytes the app
    reads; the response's, the body bytes the app sends.
    """

    __slots__ = ("_receive", "_send", "counts_request", "request", "response")

    def __init__(self, receive: Receive, send: Send, content_length: bytes | None) -> None:
        self._receive = receive
        self._send = send
        declared = declared_length(content_length)
        self.counts_request = declared is None  # else `receive` needs no wrapping
        self.request = 0 if declared is None else declared
        self.response = 0

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.request += len(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            self.response += len(message.get("body", b""))
        await self._send(message)


def declared_length(value: bytes | None) -> int | None:
    """A Content-Length header's value, None when absent or not a plain number."""
    if value is None or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


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
