"""An existing FastAPI service, written without aiva in mind.

It has what real ones have: a lifespan that makes an httpx client and hands it to the
handlers as state, a dependency, an exception handler, a background task, and a call
to another service (`INVENTORY_URL`). Tests instrument it with `aiva.instrument` or
serve it with `aiva serve tests.apps.orders_api:build --factory`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import BackgroundTasks, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse


class OutOfStock(Exception):
    """Answered 409 by the app's own exception handler."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    base_url = os.environ.get("INVENTORY_URL", "http://127.0.0.1:9")
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        yield {"inventory": client}


def current_user(x_user: str = Header("anonymous")) -> str:
    return x_user


def build() -> FastAPI:
    app = FastAPI(title="orders", lifespan=lifespan)
    app.state.shipped = []

    @app.exception_handler(OutOfStock)
    async def out_of_stock(request: Request, error: OutOfStock) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=409)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int, request: Request, user: str = Depends(current_user)) -> Any:
        stock = await request.state.inventory.get(f"/stock/{order_id}")
        stock.raise_for_status()
        return {"order": order_id, "user": user, "stock": stock.json()}

    @app.get("/orders/{order_id}/check")
    async def check_order(order_id: int, user: str = Depends(current_user)) -> Any:
        if order_id == 0:
            raise OutOfStock(f"order {order_id} is out of stock")
        return {"order": order_id, "user": user}

    @app.post("/orders/{order_id}/ship")
    async def ship(order_id: int, tasks: BackgroundTasks) -> Any:
        tasks.add_task(app.state.shipped.append, order_id)
        return {"shipping": order_id}

    @app.get("/shipped")
    async def shipped() -> Any:
        return {"shipped": app.state.shipped}

    @app.get("/inventory-client")
    async def inventory_client(request: Request) -> Any:
        return {"base_url": str(request.state.inventory.base_url)}

    return app
