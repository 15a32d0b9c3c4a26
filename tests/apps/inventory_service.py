"""An existing Starlette service that reads PostgreSQL and Redis through clients its
lifespan makes (`INVENTORY_DSN`, `INVENTORY_REDIS`); served with
`aiva serve tests.apps.inventory_service:app`."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger("inventory")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    pool = await asyncpg.create_pool(os.environ["INVENTORY_DSN"], min_size=1, max_size=2)
    cache = redis.Redis.from_url(os.environ["INVENTORY_REDIS"])
    logger.info("inventory ready")
    try:
        yield {"pool": pool, "cache": cache}
    finally:
        logger.info("inventory closing")
        await cache.aclose()
        await pool.close()


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"service": "inventory"})


async def stock(request: Request) -> JSONResponse:
    item = int(request.path_params["item_id"])
    count = await request.state.pool.fetchval("SELECT $1::int * 10", item)
    reads = await request.state.cache.incr(f"stock-reads:{item}")
    logger.info("stock read", extra={"item": item})
    return JSONResponse({"item": item, "count": count, "reads": reads})


app = Starlette(
    routes=[Route("/", home), Route("/stock/{item_id}", stock)],
    lifespan=lifespan,
)
