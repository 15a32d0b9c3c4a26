"""A Starlette service whose handler counts and measures through `aiva.meter()`.
Served with `aiva serve tests.apps.metered_service:app`: GET /order?items=N adds N to
`shop.orders` and records N/4 in `shop.order.size` (buckets 0.5, 1, 2)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aiva


async def order(request: Request) -> PlainTextResponse:
    items = int(request.query_params.get("items", "1"))
    meter = aiva.meter("shop")
    meter.create_counter("shop.orders", unit="{order}").add(items, {"shop.region": "eu"})
    meter.create_histogram(
        "shop.order.size", unit="s", explicit_bucket_boundaries_advisory=[0.5, 1.0, 2.0]
    ).record(items / 4, {"shop.region": "eu"})
    return PlainTextResponse(type(meter).__name__)


app = Starlette(routes=[Route("/order", order)])
