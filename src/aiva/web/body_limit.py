"""The request body limit, applied only to requests that can carry a body, to chunked
bodies as they arrive, and closing the connection after a 413."""

from __future__ import annotations

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BODY_HEADERS = (b"content-length", b"transfer-encoding")
# Versions whose requests have a body only when one of those headers says so.
_FRAMED_BY_HEADERS = frozenset({"1.0", "1.1"})


class BodyLimitMiddleware:
    """Starlette's RequestBodyLimitMiddleware, skipped for requests without a body.

    Starlette's middleware builds a responder and wraps `receive` and `send` for every
    request, a body or not: about 8 µs a request under uvicorn here, a quarter of what
    Starlette itself costs (benchmarks/README.md). An HTTP/1.x request with neither
    Content-Length nor Transfer-Encoding has no body (RFC 9112, 6.3), so there is
    nothing to limit and it goes straight on; every other request, and every request
    over another HTTP version, takes Starlette's middleware.

    Starlette's middleware refuses a declared Content-Length over the limit before the
    app reads anything, and counts a body without one (chunked) as the app reads it:
    the read that would pass the limit raises instead, so the app never holds more than
    the limit, and the answer is 413. The 413 here also closes the connection
    (`Connection: close`): the rest of a refused body is never read, where a kept-alive
    connection would have to read and discard all of it, however long the client sends.
    """

    def __init__(self, app: ASGIApp, max_body_size: int) -> None:
        self.app = app
        self.limited = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and may_have_body(scope):
            await self.limited(scope, receive, closing_after_413(send))
        else:
            await self.app(scope, receive, send)


def closing_after_413(send: Send) -> Send:
    """`send`, adding `Connection: close` to a 413 (uvicorn then closes after it)."""

    async def send_closing(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 413:
            message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
        await send(message)

    return send_closing


def may_have_body(scope: Scope) -> bool:
    if scope.get("http_version") not in _FRAMED_BY_HEADERS:
        return True
    return any(name in _BODY_HEADERS for name, _ in scope["headers"])
