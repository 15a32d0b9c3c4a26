"""Where rate-limit windows are counted: in this process, or in Redis through the limits
library; a Redis that fails or is slow lets requests through (fail open), counted."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

logger = logging.getLogger("aiva.rate_limit")

# Each call to a shared storage has this long: a Redis on the same network answers in
# about a millisecond; one that takes 100 times that is treated as down.
STORAGE_TIMEOUT_S = 0.1
# After a failure the storage is left alone this long: a dead or black-holed Redis then
# costs one request a second the timeout, the others nothing.
SKIP_AFTER_FAILURE_S = 1.0
# Lines about a failing storage: the first, then at most one a minute with the count.
STORAGE_LOG_EVERY_S = 60.0
_new = tuple.__new__
_ceil = math.ceil
# (policy, client) pairs one process tracks in memory; beyond it the pair tracked
# longest is forgotten (its client starts a fresh window). With the default 100
# requests a pair holds at most 100 times: 10,000 pairs stay under ~40 MB.
MAX_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class Policy:
    """A quota: `requests` a client may make in any `window_s` seconds; `name` is its
    name in the RateLimit headers and the metrics."""

    name: str
    requests: int
    window_s: int


class Outcome(NamedTuple):
    """A window's state after a request (or, from `peek`, before one).

    A NamedTuple: made once a request, it costs a fifth of a frozen dataclass.
    """

    allowed: bool
    # Quota units left in the window (RateLimit's `r`); None: not asked (an allowed
    # request counted in Redis: knowing would cost a second round trip).
    remaining: int | None
    # Whole seconds until a unit frees up (RateLimit's `t`, Retry-After); 0: none used.
    reset_s: int


class Windows(Protocol):
    """A storage of sliding windows, one per (policy, client)."""

    async def hit(self, policy: Policy, client: str) -> Outcome | None:
        """Count a request when the window has room; None: unknown (the storage failed)."""
        ...

    async def peek(self, policy: Policy, client: str) -> Outcome | None:
        """Whether a request now would be allowed, counting nothing."""
        ...

    async def close(self) -> None: ...


class MemoryWindows:
    """Sliding logs in this process: per (policy, client), the times of its requests in
    the last window; a request is allowed when fewer than `requests` fall within
    `window_s` before it (the rule of the limits library's moving window).

    Written by hand rather than taken from limits' MemoryStorage: its async moving
    window costs 7 to 12 µs a request (hit plus window stats; it starts an expiry task
    on most calls, which scans every key) against the 3 µs issue #12 allows all its
    per-request work; this costs about 0.5 µs. Redis goes through limits (RedisWindows).
    """

    def __init__(
        self, max_tracked: int = MAX_TRACKED, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logs: dict[tuple[str, str], deque[float]] = {}
        self._max_tracked = max_tracked
        self._clock = clock

    async def hit(self, policy: Policy, client: str) -> Outcome:
        return self.hit_now(policy, client)

    async def peek(self, policy: Policy, client: str) -> Outcome:
        log = self._logs.get((policy.name, client))
        now = self._clock()
        start = now - policy.window_s
        while log and log[0] <= start:
            log.popleft()
        if not log:
            return Outcome(True, policy.requests, 0)
        reset = math.ceil(log[0] + policy.window_s - now)
        return Outcome(len(log) < policy.requests, policy.requests - len(log), reset)

    async def close(self) -> None:
        self._logs.clear()

    def hit_now(self, policy: Policy, client: str) -> Outcome:
        """`hit` without the coroutine."""
        key = (policy.name, client)
        now = self._clock()
        log = self._logs.get(key)
        if log is None:
            if len(self._logs) >= self._max_tracked:
                del self._logs[next(iter(self._logs))]  # the pair tracked longest
            log = self._logs[key] = deque()
        else:
            start = now - policy.window_s
            while log and log[0] <= start:
                log.popleft()
        used = len(log)
        # The oldest request in the window frees its unit when it leaves it (in > 0 s).
        # tuple.__new__: a NamedTuple's own constructor costs 0.24 µs, this 0.1 µs.
        if used >= policy.requests:
            return _new(Outcome, (False, 0, _ceil(log[0] + policy.window_s - now)))
        log.append(now)
        reset = _ceil(log[0] + policy.window_s - now)
        return _new(Outcome, (True, policy.requests - used - 1, reset))

    def tracked(self) -> int:
        """(policy, client) pairs held."""
        return len(self._logs)


class RedisWindows:
    """The limits library's moving window in Redis (a list of request times per key,
    kept by its Lua scripts): one count for every worker and pod.

    One round trip for an allowed request (its remaining quota unknown: a second trip
    for the window's state would double the cost, about 80 µs of redis-py CPU a
    call); two for a refused one, whose 429 carries the fields.
    """

    def __init__(self, url: str) -> None:
        """`url`: redis:// or rediss://. Connects lazily, at the first call."""
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter
        from redis.asyncio import ConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # aiva's own pool (limits has no close): closed at shutdown.
        self._pool = ConnectionPool.from_url(
            url,
            socket_connect_timeout=STORAGE_TIMEOUT_S,
            socket_timeout=STORAGE_TIMEOUT_S,
            # One retry at once: a pooled connection that a restarted Redis closed is
            # replaced within the call; the call's own timeout bounds the rest.
            retry=Retry(NoBackoff(), 1),
            # A full pool fails the call (the request passes) instead of opening more.
            max_connections=64,
        )
        # limits types its pass-through options as scalars; redis-py takes the pool.
        options: dict[str, Any] = {"connection_pool": self._pool}
        self._storage = RedisStorage(
            f"async+{url}",
            wrap_exceptions=True,
            implementation="redispy",  # redis-py, which aiva has already (not coredis)
            key_prefix="aiva",
            **options,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._items: dict[Policy, Any] = {}

    def _item(self, policy: Policy) -> Any:
        item = self._items.get(policy)
        if item is None:
            from limits import RateLimitItemPerSecond

            item = RateLimitItemPerSecond(policy.requests, policy.window_s)
            self._items[policy] = item
        return item

    async def hit(self, policy: Policy, client: str) -> Outcome:
        item = self._item(policy)
        if await self._limiter.hit(item, policy.name, client):
            return _new(Outcome, (True, None, 0))
        return await self._state(policy, item, client, False)

    async def peek(self, policy: Policy, client: str) -> Outcome:
        return await self._state(policy, self._item(policy), client, None)

    async def _state(self, policy: Policy, item: Any, client: str, allowed: bool | None) -> Outcome:
        reset_at, remaining = await self._limiter.get_window_stats(item, policy.name, client)
        if remaining >= policy.requests:
            return Outcome(True if allowed is None else allowed, remaining, 0)
        reset = max(math.ceil(reset_at - time.time()), 1)
        return Outcome(remaining > 0 if allowed is None else allowed, remaining, reset)

    async def close(self) -> None:
        await self._pool.aclose()


@dataclass
class StorageCounts:
    """Read by the metric callbacks on the SDK's thread; written on the event loop."""

    errors: int = 0
    unchecked: int = 0


@dataclass
class FailOpen:
    """A shared storage that may fail or hang: each call bounded by STORAGE_TIMEOUT_S;
    a failure lets the request through (None) and is counted; the storage is then left
    alone for SKIP_AFTER_FAILURE_S; lines are logged for the first failure, at most
    one a minute after it (with the count), and once when the storage answers again.
    """

    inner: Windows
    counts: StorageCounts
    clock: Callable[[], float] = time.monotonic
    _resume_at: float = 0.0
    _failures_unlogged: int = 0
    _failing_since: float | None = None
    _logged_at: float = field(default=-math.inf)

    async def hit(self, policy: Policy, client: str) -> Outcome | None:
        return await self._call(self.inner.hit, policy, client)

    async def peek(self, policy: Policy, client: str) -> Outcome | None:
        return await self._call(self.inner.peek, policy, client)

    async def close(self) -> None:
        await self.inner.close()

    async def _call(
        self, call: Callable[[Policy, str], Any], policy: Policy, client: str
    ) -> Outcome | None:
        now = self.clock()
        if now < self._resume_at:
            self.counts.unchecked += 1
            return None
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S):
                outcome: Outcome | None = await call(policy, client)
        except Exception as error:  # noqa: BLE001 - the storage boundary: counted, logged
            self._failed(error, now)
            return None
        if self._failing_since is not None:
            self._recovered(now)
        return outcome

    def _failed(self, error: Exception, now: float) -> None:
        self.counts.errors += 1
        self.counts.unchecked += 1
        self._resume_at = now + SKIP_AFTER_FAILURE_S
        self._failures_unlogged += 1
        if self._failing_since is None:
            self._failing_since = now
        if now - self._logged_at < STORAGE_LOG_EVERY_S:
            return
        reason = f"no answer within {STORAGE_TIMEOUT_S * 1000:.0f} ms"
        if not isinstance(error, TimeoutError):
            reason = f"{type(error).__name__}: {str(error)[:200]}"
        logger.error(
            "rate-limit storage failed (%s): requests pass unchecked until it answers "
            "(%d failures since the last line)",
            reason,
            self._failures_unlogged,
            extra={"failures": self._failures_unlogged},
        )
        self._logged_at = now
        self._failures_unlogged = 0

    def _recovered(self, now: float) -> None:
        assert self._failing_since is not None
        logger.warning(
            "rate-limit storage answers again after %.1f s of failures", now - self._failing_since
        )
        self._failing_since = None
        self._failures_unlogged = 0
        self._logged_at = -math.inf
