"""A Starlette service that logs a secret every way a service can: in a message, in
extras, in log_context fields and in an exception's text, handled and unhandled.
Served with `aiva serve tests.apps.leaky_service:app`; the secret is `LEAKY_SECRET`."""

from __future__ import annotations

import logging
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiva import log_context

logger = logging.getLogger("leaky")


async def leak(request: Request) -> PlainTextResponse:
    secret = os.environ["LEAKY_SECRET"]
    dsn = f"postgresql://app:{secret}@db:5432/orders"
    with log_context(db_password=secret, target=dsn):
        logger.info("connecting to %s", dsn)
        logger.info(
            "signing in",
            extra={
                "password": secret,
                "headers": {"Authorization": f"Bearer {secret}", "Accept": "*/*"},
                "query": f"user=app&token={secret}",
            },
        )
        logger.info("customer card 4111-1111-1111-1111 charged")  # for a pattern of the test's
        try:
            raise ConnectionError(f"cannot reach {dsn} (password={secret})")
        except ConnectionError:
            logger.exception("connect failed")
    if request.query_params.get("raise"):
        # Unhandled: the server's "Exception in ASGI application" line, traceback and all.
        raise RuntimeError(f"gave up on {dsn}")
    return PlainTextResponse("leaked nothing")


app = Starlette(routes=[Route("/leak", leak)])
