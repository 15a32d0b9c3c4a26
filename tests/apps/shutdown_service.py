"""A service built on aiva with a request that outlasts the graceful timeout, for the
shutdown tests: `aiva serve tests.apps.shutdown_service:build --factory`.

`/slow?s=N` sleeps N seconds.
"""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiva import create_app


async def slow(request: Request) -> PlainTextResponse:
    seconds = float(request.query_params["s"])
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {seconds}")


def build() -> Starlette:
    return create_app(routes=[Route("/slow", slow)])
