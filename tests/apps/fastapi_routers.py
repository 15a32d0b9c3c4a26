"""A FastAPI service with a router included under a prefix, its own telemetry switched off
as FastAPI documents it (what aiva's plain pipeline asks of a FastAPI app)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI

router = APIRouter()


@router.get("/items/{item_id}")
async def item(item_id: int) -> Any:
    return {"item": item_id}


def build() -> FastAPI:
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})
    app.include_router(router, prefix="/v1")
    return app
