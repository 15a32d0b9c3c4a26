"""Load shedding and the count of what aiva refuses.

Past `server.limits.max_concurrency` requests in flight in the process, a request is
answered 503 with `Retry-After` at once, before any of the app or its telemetry runs: an
overloaded service answers quickly instead of queueing until every request times out.
The probes (`/livez`, `/readyz`, `/health`, `/ready` and below) and `/metrics` are never
shed: Kubernetes must not restart a pod for being busy, and the scrape that shows the
shedding must get through.

Every refusal, here and in aiva.fast.uvicorn_protocol, counts in `aiva.http.rejected{reason}`
(overload, header_too_large, too_many_headers, header_timeout), which exists at 0
from start-up.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from starlette.types import Message, Scope, Send

from aiva import __version__
from aiva.web.paths import route_path

# Where the lifespan state keeps the Rejections, shared with the connection protocol
# (uvicorn hands every connection the same state dict).
REJECTIONS_KEY = "aiva.rejections"
REASONS = ("overload", "header_too_large", "too_many_headers", "header_timeout")
NO_LIMIT = sys.maxsize
RETRY_AFTER_S = 1
_PROBE_PATHS = frozenset(
    {"/livez", "/readyz", "/health", "/ready", "/health/live", "/health/ready", "/health/startup"}
)
_PROBE_PREFIXES = ("/livez/", "/readyz/", "/health/")
_BODY = b"Service Unavailable: too many requests in flight, retry later\n"
_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_BODY)).encode("ascii")),
    (b"retry-after", str(RETRY_AFTER_S).encode("ascii")),
    (b"cache-control", b"no-store"),
]


class Rejections:
    """Counts of refused requests and connections by reason, for aiva.http.rejected.

    Plain integers, read by the observable counter's callback on the SDK's thread
    (each read sees a whole count: the keys never change).
    """

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = dict.fromkeys(REASONS, 0)

    def add(self, reason: str) -> None:
        self.counts[reason] += 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"reason": reason}) for reason, n in list(self.counts.items())]


class Shedding:
    """What the request middleware needs for shedding, set once the lifespan has started
    (the settings and the meter provider arrive with its state)."""

    def __init__(self) -> None:
        self.limit = NO_LIMIT
        self.rejections = Rejections()
        self._exempt = _PROBE_PATHS

    def started(self, state: dict[str, Any]) -> None:
        """Read the limit, share the counts with the protocol, register the counter."""
        aiva_state = state.get("aiva")
        if aiva_state is None:
            return
        settings = aiva_state.settings
        self.limit = settings.server.limits.max_concurrency or NO_LIMIT
        self._exempt = _PROBE_PATHS | {settings.telemetry.metrics.prometheus.path}
        state[REJECTIONS_KEY] = self.rejections
        meter = aiva_state.telemetry.meter_provider.get_meter("aiva.http", __version__)
        meter.create_observable_counter(
            "aiva.http.rejected",
            callbacks=[self.rejections.observe],
            unit="{request}",
            description="Requests and connections refused by aiva's limits, by reason.",
        )

    def exempt(self, scope: Scope) -> bool:
        path = route_path(scope)
        return path in self._exempt or path.startswith(_PROBE_PREFIXES)

    async def refuse(self, send: Send, request_id: str) -> None:
        """503 with Retry-After, and counted."""
        self.rejections.add("overload")
        headers = [*_HEADERS, (b"x-request-id", request_id.encode("ascii"))]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": _BODY})


def on_startup(send: Send, started: Callable[[], None]) -> Send:
    """The lifespan's `send`, calling `started` just before start-up is reported complete
    (the state then holds what the app's lifespan put there)."""

    async def send_after_start(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started()
        await send(message)

    return send_after_start
