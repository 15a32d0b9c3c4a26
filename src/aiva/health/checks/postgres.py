"""`postgres`: a real query over a real, short-lived connection."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from aiva.health.model import Outcome, Status
from aiva.health.types import CheckFunction
from aiva.settings.masking import mask_url
from aiva.settings.model import DatabaseSettings


def postgres_check(database: DatabaseSettings, options: Mapping[str, Any]) -> CheckFunction:
    """Connect, run the query (default `SELECT version()`), close; one round trip a round.

    A connection per round rather than a pool: a health check must notice a server
    that went away, not a pool's stale connection, and a round every few seconds
    costs nothing worth pooling.
    """
    dsn = options.get("dsn")
    query = options.get("query", "SELECT version()")
    connect_kwargs: dict[str, Any] = (
        {"dsn": dsn}
        if dsn
        else {
            "host": database.host,
            "port": database.port,
            "database": database.database,
            "user": database.username,
            "password": database.password,
            "ssl": database.ssl_mode,
        }
    )
    target = mask_url(dsn) if dsn else f"{database.host}:{database.port}/{database.database}"

    async def check() -> Outcome:
        started = time.perf_counter()
        connection = await asyncpg.connect(**connect_kwargs)
        try:
            value = await connection.fetchval(query)
        finally:
            await connection.close()
        latency_ms = (time.perf_counter() - started) * 1000
        details: dict[str, Any] = {"target": target, "latency_ms": round(latency_ms, 3)}
        version = connection.get_server_version()
        details["server_version"] = f"{version.major}.{version.minor}"
        if isinstance(value, str | int | float):
            details["result"] = str(value)[:120]
        return Outcome(Status.HEALTHY, "ok", details, round(latency_ms, 3), "ms")

    return check
