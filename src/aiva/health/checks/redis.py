"""`redis`: PING over a real, short-lived connection."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aiva.health.model import Outcome, Status
from aiva.health.types import CheckFunction
from aiva.settings.masking import mask_url


def redis_check(url: str, timeout_s: float) -> CheckFunction:
    """PING, then close. No retries: the runner's timeout is the only patience there is."""
    target = mask_url(url)

    async def check() -> Outcome:
        started = time.perf_counter()
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await client.ping()
            info = await client.info("server")
        finally:
            await client.aclose()
        latency_ms = (time.perf_counter() - started) * 1000
        details = {
            "target": target,
            "latency_ms": round(latency_ms, 3),
            "server_version": info.get("redis_version"),
        }
        return Outcome(Status.HEALTHY, "ok", details, round(latency_ms, 3), "ms")

    return check
