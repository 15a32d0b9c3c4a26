"""A service whose own routes live under a Mount, served by `aiva.server.run`."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

MOUNTED_TEMPLATE = "/api/v1/orders/{order_id}"


async def order(request: Request) -> JSONResponse:
    return JSONResponse({"order": request.path_params["order_id"]})


def main() -> None:
    from aiva.server import run
    from aiva.settings import load_settings
    from aiva.web.app import create_app

    loaded = load_settings(os.environ)
    routes = [Mount("/api", routes=[Mount("/v1", routes=[Route("/orders/{order_id}", order)])])]
    run(loaded, create_app(loaded, routes=routes))


if __name__ == "__main__":
    main()
