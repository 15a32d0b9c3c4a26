"""A service built on aiva with a slow route, run as `python -m tests.apps.slow_service`."""

from __future__ import annotations

import asyncio
import os

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiva import create_app
from aiva.server import run
from aiva.settings import load_settings


async def slow(request: Request) -> PlainTextResponse:
    seconds = float(request.query_params["s"])
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {seconds}")


def main() -> None:
    loaded = load_settings(os.environ)
    run(loaded, create_app(loaded, routes=[Route("/slow", slow)]))


if __name__ == "__main__":
    main()
