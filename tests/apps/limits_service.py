"""A service built on aiva for the limits tests, served as
`aiva serve tests.apps.limits_service:build --factory`.

`/slow?s=N` sleeps N seconds; `POST /upload` reads its body as it streams in and keeps
the most bytes any upload handler has seen, which `/uploaded` answers; `/pid` answers
the worker's process id.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiva import create_app


async def slow(request: Request) -> PlainTextResponse:
    seconds = float(request.query_params["s"])
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {seconds}")


async def upload(request: Request) -> PlainTextResponse:
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
    finally:
        request.app.state.most_seen = max(request.app.state.most_seen, seen)
    return PlainTextResponse(str(seen))


async def uploaded(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.app.state.most_seen))


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


def build() -> Starlette:
    app = create_app(
        routes=[
            Route("/slow", slow),
            Route("/upload", upload, methods=["POST"]),
            Route("/uploaded", uploaded),
            Route("/pid", pid),
        ]
    )
    app.state.most_seen = 0
    return app
