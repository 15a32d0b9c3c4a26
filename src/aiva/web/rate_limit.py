"""Rate limiting: requests per client and route group in a sliding window, answered 429
with Retry-After and the IETF RateLimit headers; and the throttle on wrong API keys.

The header fields are those of draft-ietf-httpapi-ratelimit-headers-10 (September
2025): `RateLimit-Policy: "default";q=100;w=60` and `RateLimit: "default";r=42;t=17`
(remaining units, seconds until one frees up), on every 429 and on allowed responses
once less than half of the quota is left.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiva import __version__
from aiva.settings.model import RateLimitSettings
from aiva.web._rate_windows import (
    FailOpen,
    MemoryWindows,
    Outcome,
    Policy,
    RedisWindows,
    StorageCounts,
    Windows,
)
from aiva.web._sampled_log import SampledLog
from aiva.web.lifespans import Lifespan
from aiva.web.paths import route_path
from aiva.web.routing import route_template

security_log = logging.getLogger("aiva.security")

# Where the lifespan hands the process's Limiter to requests (scope["state"]).
STATE_KEY = "aiva.rate_limit"
DEFAULT_POLICY = "default"
# Wrong API keys a client may present in a minute; the next gets 429 (key-protected
# endpoints) until the oldest failure is a minute old. A scraper with the right key
# never fails; an attacker gets ten guesses a minute instead of thousands a second.
KEY_FAILURE_POLICY = Policy("api-key", 10, 60)
# Lines about wrong keys: a client's first, then one a minute with the count since;
# never two within a second overall, whatever the number of clients.
KEY_LOG_EVERY_S = 60.0
KEY_LOG_SPACING_S = 1.0
# A client id from a header is cut here: it becomes part of a storage key.
MAX_CLIENT_ID = 128
UNKNOWN_CLIENT = "unknown"

POLICY_HEADER = b"ratelimit-policy"
LIMIT_HEADER = b"ratelimit"
RETRY_AFTER = b"retry-after"
# The draft's problem type for a 429 (RFC 9457 problem details).
QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
PROBLEM_JSON = b"application/problem+json"


@dataclass(frozen=True)
class Quota:
    """A policy with its header values made once."""

    policy: Policy
    # `"default"`: the policy's name as a structured-field string.
    name_field: bytes
    # RateLimit-Policy's value: `"default";q=100;w=60`.
    policy_field: bytes
    # The 429's body.
    problem: bytes

    @classmethod
    def of(cls, policy: Policy) -> Quota:
        name = f'"{policy.name}"'.encode("ascii")  # validated: visible ASCII, no quote
        problem = {
            "type": QUOTA_EXCEEDED,
            "title": "Too Many Requests",
            "status": 429,
            "violated-policies": [policy.name],
        }
        return cls(
            policy,
            name,
            b"%s;q=%d;w=%d" % (name, policy.requests, policy.window_s),
            json.dumps(problem).encode("ascii"),
        )

    def limit_field(self, outcome: Outcome) -> bytes:
        """RateLimit's value: `"default";r=42;t=17` (`r` being required, a remaining
        quota not known is left out by the caller)."""
        assert outcome.remaining is not None
        return b"%s;r=%d;t=%d" % (self.name_field, outcome.remaining, outcome.reset_s)

    def headers(self, outcome: Outcome) -> list[tuple[bytes, bytes]]:
        """The RateLimit fields, and Retry-After when the request was refused."""
        fields = [(POLICY_HEADER, self.policy_field), (LIMIT_HEADER, self.limit_field(outcome))]
        if not outcome.allowed:
            fields.append((RETRY_AFTER, b"%d" % outcome.reset_s))
        return fields

    def refusal(self, outcome: Outcome) -> Response:
        """The 429 as a Starlette response (for endpoints)."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in self.headers(outcome)}
        return Response(self.problem, 429, headers, PROBLEM_JSON.decode("ascii"))


KEY_FAILURE_QUOTA = Quota.of(KEY_FAILURE_POLICY)


@dataclass(frozen=True)
class RateLimits:
    """security.rate_limit as the middleware uses it: which quota a path falls under,
    who the client is, and which paths are exempt."""

    enabled: bool
    storage: str
    default: Quota
    # Group quotas by path prefix, longest prefix first.
    groups: tuple[tuple[str, Quota], ...]
    # header:NAME's name (lower case, as ASGI gives header names); None: the peer address.
    client_header: bytes | None
    exempt_paths: frozenset[str]
    exempt_prefixes: tuple[str, ...]

    @classmethod
    def from_settings(cls, settings: RateLimitSettings, exempt: Iterable[str]) -> RateLimits:
        """`exempt`: route paths never limited (a `{parameter}` exempts all it matches)."""
        from limits import parse  # the notation security.rate_limit.groups is written in

        groups = []
        for prefix, limit in settings.groups.items():
            item = parse(limit)
            groups.append((prefix, Quota.of(Policy(prefix, item.amount, item.get_expiry()))))
        groups.sort(key=lambda group: len(group[0]), reverse=True)
        kind, _, name = settings.key.partition(":")
        exempt = list(exempt)
        return cls(
            enabled=settings.enabled,
            storage=settings.storage,
            default=Quota.of(Policy(DEFAULT_POLICY, settings.requests, settings.window_s)),
            groups=tuple(groups),
            client_header=name.lower().encode("latin-1") if kind == "header" else None,
            exempt_paths=frozenset(p for p in exempt if "{" not in p),
            exempt_prefixes=tuple(p[: p.index("{")] for p in exempt if "{" in p),
        )

    def quotas(self) -> list[Quota]:
        return [self.default, *(quota for _, quota in self.groups)]

    def exempt(self, path: str) -> bool:
        return path in self.exempt_paths or path.startswith(self.exempt_prefixes)

    def quota_for(self, path: str) -> Quota:
        for prefix, quota in self.groups:
            if path.startswith(prefix):
                return quota
        return self.default

    def client_of(self, scope: Scope) -> str:
        """The id a client is counted by: the header's value when configured and sent,
        else the peer address."""
        header = self.client_header
        if header is not None:
            value: bytes
            for name, value in scope["headers"]:
                if name == header and value:
                    return value[:MAX_CLIENT_ID].decode("latin-1")
        client = scope.get("client")
        return str(client[0]) if client else UNKNOWN_CLIENT


class RateLimitMiddleware:
    """Pure ASGI: each request not exempt counts against its quota; over it, 429.

    Placed inside aiva's request middleware, so a refused request still has its span,
    its access line and its X-Request-ID (a 429 is telemetry too); its route is matched
    as the router would, so that they name its template.
    """

    def __init__(self, app: ASGIApp, limits: RateLimits, routes: list[BaseRoute]) -> None:
        """`routes`: the app's own list (routes added later are seen)."""
        self.app = app
        self.limits = limits
        self.routes = routes
        # The usual settings (no groups, clients by address) skip two method calls.
        self._only = limits.default if not limits.groups else None
        self._by_address = limits.client_header is None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        path = route_path(scope)
        state = scope.get("state")
        limiter: Limiter | None = state.get(STATE_KEY) if state else None
        if limiter is None or limits.exempt(path):
            await self.app(scope, receive, send)
            return
        quota = self._only or limits.quota_for(path)
        policy = quota.policy
        if self._by_address and (peer := scope.get("client")):
            client = peer[0]
        else:
            client = limits.client_of(scope)
        memory = limiter.memory  # no coroutine for an in-memory count: 0.25 µs less
        if memory is not None:
            outcome: Outcome | None = memory.hit_now(policy, client)
        else:
            outcome = await limiter.windows.hit(policy, client)
        if outcome is None:  # the storage failed: the request passes, counted there
            await self.app(scope, receive, send)
            return
        if not outcome.allowed:
            _match_route(scope, self.routes)
            limiter.count_rejected(policy, scope)
            await _refuse(send, quota, outcome)
            return
        remaining = outcome.remaining
        if remaining is None or remaining * 2 >= policy.requests:
            # Half the quota or more left (or not known): no fields. The draft lets a
            # server send them only near exhaustion; the common request then skips the
            # wrapper (about 1.5 µs).
            await self.app(scope, receive, send)
            return
        fields = quota.headers(outcome)

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *fields]
            await send(message)

        await self.app(scope, receive, send_with_fields)


def _match_route(scope: Scope, routes: list[BaseRoute]) -> None:
    """The route the router would have chosen, in the scope as it puts it there (for a
    refused request only: the router never sees it)."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            scope["route"] = child.get("route", route)  # aiva's RouteGroup names its own
            return
        if match is Match.PARTIAL and partial is None:
            partial = child.get("route", route)
    if partial is not None:
        scope["route"] = partial


async def _refuse(send: Send, quota: Quota, outcome: Outcome) -> None:
    body = quota.problem
    headers = [
        (b"content-type", PROBLEM_JSON),
        (b"content-length", b"%d" % len(body)),
        *quota.headers(outcome),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Limiter:
    """One process's rate limiting, owned by the lifespan: the windows (in memory or in
    Redis), the counts the metrics read, and the guard on wrong API keys."""

    def __init__(self, limits: RateLimits, windows: Windows, storage: StorageCounts) -> None:
        self.limits = limits
        self.windows = windows
        # The same windows when in memory: counted without a coroutine.
        self.memory = windows if isinstance(windows, MemoryWindows) else None
        self.storage = storage
        quotas = limits.quotas() if limits.enabled else []
        # By (policy, route template): read on the SDK's thread (a copy of plain ints).
        # Each policy's series exists from start-up, at 0.
        self.rejected: dict[tuple[str, str | None], int] = {
            (q.policy.name, None): 0 for q in [*quotas, KEY_FAILURE_QUOTA]
        }
        self.key_failures = 0
        self._key_log = SampledLog(KEY_LOG_EVERY_S, KEY_LOG_SPACING_S)

    @classmethod
    def open(cls, limits: RateLimits) -> Limiter:
        """In memory, or in Redis behind a timeout that fails open. Connects lazily: a
        process that limits nothing and has no API key never talks to Redis."""
        storage = StorageCounts()
        if limits.storage == "memory":
            return cls(limits, MemoryWindows(), storage)
        return cls(limits, FailOpen(RedisWindows(limits.storage), storage), storage)

    async def close(self) -> None:
        await self.windows.close()

    # --- wrong API keys -------------------------------------------------------------

    async def key_refusal(self, scope: Scope) -> Outcome | None:
        """The 429's outcome when this client presented too many wrong keys lately."""
        client = self.limits.client_of(scope)
        outcome = await self.windows.peek(KEY_FAILURE_POLICY, client)
        if outcome is None or outcome.allowed:
            return None
        self.count_rejected(KEY_FAILURE_POLICY, scope)
        self._log_key_attempt(client, scope, throttled=True)
        return outcome

    async def key_failed(self, scope: Scope) -> Outcome | None:
        """Count a wrong key; the 429's outcome when it was one too many."""
        client = self.limits.client_of(scope)
        self.key_failures += 1
        outcome = await self.windows.hit(KEY_FAILURE_POLICY, client)
        throttled = outcome is not None and not outcome.allowed
        if throttled:
            self.count_rejected(KEY_FAILURE_POLICY, scope)
        self._log_key_attempt(client, scope, throttled)
        return outcome if throttled else None

    def count_rejected(self, policy: Policy, scope: Scope) -> None:
        """A 429, by policy and route template (none for an unmatched path)."""
        key = (policy.name, route_template(scope))
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def _log_key_attempt(self, client: str, scope: Scope, throttled: bool) -> None:
        due = self._key_log.note(client, throttled)
        if due is None:
            return
        attempts, refused = due
        route = route_template(scope) or "(unmatched)"
        security_log.warning(
            "wrong API key from client %s on %s (attempts since the last line: %d, "
            "refused by the throttle: %d; %d wrong keys allowed in %d s)",
            client,
            route,
            attempts,
            refused,
            KEY_FAILURE_POLICY.requests,
            KEY_FAILURE_POLICY.window_s,
            extra={"client_address": client, "attempts": attempts, "throttled": refused},
        )

    # --- metrics --------------------------------------------------------------------

    def register_metrics(self, provider: MeterProvider) -> None:
        """The rejection, storage and key-failure counters, present from start-up at 0."""
        meter = provider.get_meter("aiva.rate_limit", __version__)
        meter.create_observable_counter(
            "aiva.http.rate_limited",
            callbacks=[self._observe_rejected],
            unit="{request}",
            description="Requests answered 429 by the rate limiter, per policy.",
        )
        meter.create_observable_counter(
            "aiva.security.api_key.failures",
            callbacks=[_observe(lambda: self.key_failures)],
            unit="{request}",
            description="Requests that presented a wrong API key.",
        )
        if self.limits.storage != "memory":
            meter.create_observable_counter(
                "aiva.rate_limit.storage.errors",
                callbacks=[_observe(lambda: self.storage.errors)],
                unit="{call}",
                description="Rate-limit storage calls that failed or timed out.",
            )
            meter.create_observable_counter(
                "aiva.rate_limit.unchecked",
                callbacks=[_observe(lambda: self.storage.unchecked)],
                unit="{request}",
                description="Requests let through unchecked while the storage failed.",
            )

    def _observe_rejected(self, options: CallbackOptions) -> Iterable[Observation]:
        # On the SDK's collection thread: a copy (one C call under the GIL), nothing
        # scheduled. The policy's own series (no route) stays, at 0 when never used.
        observed = []
        for (policy, route), n in dict(self.rejected).items():
            attributes = (
                {"policy": policy} if route is None else {"policy": policy, "http.route": route}
            )
            observed.append(Observation(n, attributes))
        return observed


def _observe(read: Callable[[], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(read())]

    return observe


def with_rate_limits(lifespan: Lifespan, limits: RateLimits) -> Lifespan:
    """`lifespan` that also opens the process's Limiter (after aiva's telemetry, whose
    meter it needs) and closes it at shutdown. Always: its counters exist from start-up
    whether rate limiting is on or not; only the middleware costs a request anything."""

    @asynccontextmanager
    async def wrapped(app: Any) -> AsyncIterator[Mapping[str, Any]]:
        async with lifespan(app) as state:
            merged = dict(state or {})
            limiter = Limiter.open(limits)
            aiva_state = merged.get("aiva")
            if aiva_state is not None:
                limiter.register_metrics(aiva_state.telemetry.meter_provider)
            try:
                yield {**merged, STATE_KEY: limiter}
            finally:
                await limiter.close()

    return wrapped


def limiter_of(scope: Scope) -> Limiter | None:
    """The process's Limiter, from the request's lifespan state."""
    state = scope.get("state")
    return state.get(STATE_KEY) if state else None
