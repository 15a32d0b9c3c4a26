"""The HTTP/1.1 protocol aiva serves with: uvicorn's httptools protocol plus the limits on
request heads it lacks (size, header count, a deadline for the whole head).

Why httptools, not h11 (uvicorn's `http=` choice): speed, measured. Against aiva's
reference app (benchmarks/http_parser_wrk.py: wrk on one core, the server on the other),
httptools served 1.4 to 1.7 times as many requests a second as h11 in three runs of five
rounds (medians 2,377 against 1,434, 2,065 against 1,499, 1,952 against 1,220, on a shared
2-core machine at load 4 to 5); in-process (benchmarks/http_protocol_inprocess.py)
uvicorn's httptools protocol costs about 17 µs a kept-alive request, its h11 protocol
about 80 µs (h11 parses in Python, httptools in C: llhttp, Node's parser). h11 would
bound a head's size by itself, but neither the header count nor the time a head may
take, so either needs a subclass like this one. But uvicorn's httptools protocol bounds
nothing: a 50 MB header line is buffered whole (httptools joins the
pieces of a header value by concatenation, so the work grows with its square: 20 such
connections took the process to 1.17 GB and the event loop to 4.75 s stalls), and a
connection that never completes a head is kept forever (uvicorn times out only idle
kept-alive connections, and stops even that timer at any byte received).

What this module adds, where it bites:
- the head's bytes are counted as they arrive (`data_received`): past
  `max_header_bytes` the connection gets 431 and is closed, so a connection holds at
  most the limit plus two reads (asyncio reads at most 256 KiB) of an unfinished head;
  a head that arrives complete is measured exactly when it could be over the limit
  (it came in several reads, or in one read larger than the limit);
- more than `max_headers` header lines: 431;
- a head not complete `timeout_s` after the connection opened (or after its first
  byte, on a kept-alive connection) closes the connection, with 408 when part of a
  head came: idle sockets and slow-loris clients alike.

uvicorn internals used (HttpToolsProtocol, uvicorn 0.30 to 0.54), all checked by name
at start-up by the fast layer's self-test (`protocol_works`); without them aiva serves
with uvicorn's h11 protocol, and the fast layer's one WARNING says so:
- the methods extended here: `connection_made`, `data_received`, `on_message_begin`
  (the parser's callback at a head's first byte) and `on_headers_complete` (at its
  end, where uvicorn starts the request);
- `self.loop` (the clock), `self.transport` (to answer and close), `self.connections`
  (uvicorn's set of open connections, swept for late heads), `self.cycle` and its
  `response_complete` (whether a response is under way on the connection), `self.url`
  and `self.headers` (the head parsed so far, to measure it), `self.app` (the ASGI app
  `on_headers_complete` starts: swapped for the 431 answer, as uvicorn itself swaps in
  its 503 answer for `limit_concurrency`), `self.app_state` (the lifespan state, where
  aiva.web.shedding keeps the rejection counts and this module its sweeper).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Scope, Send

from aiva.fast import FastLayer
from aiva.web.shedding import REJECTIONS_KEY, Rejections

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Stock
else:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Stock
    except ImportError:  # uvicorn without httptools: http_protocol() serves with h11
        _Stock = asyncio.Protocol

logger = logging.getLogger(__name__)

# The HttpToolsProtocol attributes this module relies on, by the method of uvicorn's
# that sets or reads each (found among the names in that method's code).
_HOOKS: dict[str, tuple[str, ...]] = {
    "__init__": ("app", "loop", "cycle", "headers", "app_state", "connections"),
    "connection_made": ("transport", "connections"),
    "data_received": ("parser",),
    "on_message_begin": ("url", "headers"),
    "on_headers_complete": ("app", "cycle", "url", "transport"),
}
_CYCLE_HOOKS: dict[str, tuple[str, ...]] = {"__init__": ("response_complete",)}
# Where the lifespan state keeps this server's sweeper (one per process).
_SWEEPER_KEY = "aiva.head_deadlines"

_TOO_LARGE_BODY = b"Request Header Fields Too Large\n"
_TOO_LARGE_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(_TOO_LARGE_BODY)).encode("ascii")),
    (b"connection", b"close"),
]
# Written straight to the socket for a head that is not complete (no request exists).
_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\n%b\r\n%b" % (
    b"".join(name + b": " + value + b"\r\n" for name, value in _TOO_LARGE_HEADERS),
    _TOO_LARGE_BODY,
)
_TIMEOUT_BODY = b"Request Timeout\n"
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)
# A request line's bytes beyond its target: method, two spaces, "HTTP/1.1", CRLF.
_REQUEST_LINE_FRAMING = 16
# A header line's bytes beyond its name and value: ": " and CRLF.
_HEADER_LINE_FRAMING = 4


@dataclass(frozen=True)
class HeadLimits:
    """server.limits' request-head limits, as the protocol applies them."""

    max_bytes: int
    max_headers: int
    timeout_s: float


def http_protocol(limits: HeadLimits, fast: FastLayer) -> Any:
    """uvicorn's `http=`: the limited httptools protocol when the fast layer's
    `uvicorn_protocol` passed its self-test (uvicorn's internals are as this module
    expects), else "h11" (which bounds the head's size by `h11_max_incomplete_event_size`,
    answering 400; aiva.fast's one WARNING says so).

    The protocol is a partial of a module-level class, so that it pickles by reference
    into `--workers` processes (uvicorn spawns them with the Config).
    """
    if "uvicorn_protocol" not in fast:
        return "h11"
    return functools.partial(LimitedHttpToolsProtocol, limits)


def protocol_works() -> str | None:
    """The fast layer's self-test: what is missing, None when nothing."""
    return missing_hooks() or None


def missing_hooks() -> str:
    """What this module needs of uvicorn and does not find, '' when nothing."""
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError as error:
        return f"cannot import it: {error}"
    problems = _missing(httptools_impl.HttpToolsProtocol, _HOOKS)
    problems += _missing(getattr(httptools_impl, "RequestResponseCycle", None), _CYCLE_HOOKS)
    return ", ".join(problems)


def _missing(cls: object, hooks: dict[str, tuple[str, ...]]) -> list[str]:
    problems = []
    for method, attributes in hooks.items():
        code = getattr(getattr(cls, method, None), "__code__", None)
        if code is None:
            problems.append(f"no {method}()")
            continue
        problems.extend(
            f"{method}() without self.{a}" for a in attributes if a not in code.co_names
        )
    return problems


class LimitedHttpToolsProtocol(_Stock):
    """uvicorn's HttpToolsProtocol with request-head limits (see the module docstring).

    Per request on a kept-alive connection it adds a few attribute writes and
    comparisons. uvicorn's methods are called as `_Stock.method(self, ...)`: `super()`
    costs about 0.2 µs a call here, three times a request.
    """

    def __init__(
        self,
        limits: HeadLimits,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        _Stock.__init__(self, config, server_state, app_state, _loop)
        self._max_head_bytes = limits.max_bytes
        self._max_headers = limits.max_headers
        self._head_timeout_s = limits.timeout_s
        # When the head awaited must be complete (loop time); 0.0: none awaited.
        self.head_deadline = 0.0
        # A head has begun and is not complete yet.
        self._head_open = False
        # The open head's bytes in the reads after the one it began in (whose share of
        # the head is unknown); -1 while that first read is being parsed.
        self._head_bytes = -1
        # The size of the read being parsed.
        self._read_size = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _Stock.connection_made(self, transport)
        self.head_deadline = self.loop.time() + self._head_timeout_s
        sweeper = self.app_state.get(_SWEEPER_KEY)
        if not isinstance(sweeper, HeadDeadlines):
            sweeper = HeadDeadlines(self.loop, self.connections, self._head_timeout_s)
            self.app_state[_SWEEPER_KEY] = sweeper
        sweeper.watch()

    def data_received(self, data: bytes) -> None:
        self._read_size = len(data)
        _Stock.data_received(self, data)
        if self._head_open:  # a head still incomplete after this read
            counted = self._head_bytes
            if counted < 0:
                self._head_bytes = 0
            else:
                counted += len(data)
                self._head_bytes = counted
                if counted > self._max_head_bytes:
                    self._refuse_unfinished_head()
                    return
            if not self.head_deadline:
                self.head_deadline = self.loop.time() + self._head_timeout_s
        elif not self.head_deadline:
            cycle = self.cycle
            if cycle is not None and cycle.response_complete:
                # Bytes between requests that begin none (the parser skips CR and LF
                # there), on which uvicorn has stopped its keep-alive timer: without
                # this, a client sending "\r\n" every few seconds keeps it open forever.
                self.head_deadline = self.loop.time() + self._head_timeout_s

    def on_message_begin(self) -> None:
        _Stock.on_message_begin(self)
        self._head_open = True
        self._head_bytes = -1

    def on_headers_complete(self) -> None:
        came_in_pieces = self._head_bytes >= 0
        self._head_open = False
        self.head_deadline = 0.0
        if len(self.headers) > self._max_headers:
            self._answer_431("too_many_headers")
        elif (
            came_in_pieces or self._read_size > self._max_head_bytes
        ) and self._head_size() > self._max_head_bytes:
            self._answer_431("header_too_large")
        else:
            _Stock.on_headers_complete(self)

    def head_timed_out(self) -> None:
        """Close the connection (the sweeper found its head late): with 408 when part of
        a head came and no response is under way."""
        self.head_deadline = 0.0
        transport = self.transport
        # After a WebSocket upgrade the transport serves another protocol.
        if transport.is_closing() or transport.get_protocol() is not self:
            return
        self._count("header_timeout")
        if self._head_open and self._idle():
            transport.write(_TIMEOUT)
        transport.close()

    def _head_size(self) -> int:
        """The complete head's bytes: its request line and header lines."""
        headers = sum(len(name) + len(value) for name, value in self.headers)
        return (
            len(self.url)
            + _REQUEST_LINE_FRAMING
            + headers
            + _HEADER_LINE_FRAMING * len(self.headers)
        )

    def _answer_431(self, reason: str) -> None:
        """Let uvicorn start the request as usual, with an app answering 431 and closing."""
        self._count(reason)
        app = self.app
        self.app = _answer_431
        try:
            _Stock.on_headers_complete(self)
        finally:
            self.app = app

    def _refuse_unfinished_head(self) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        self._count("header_too_large")
        if self._idle():
            transport.write(_TOO_LARGE)
        transport.close()

    def _idle(self) -> bool:
        """No response under way on this connection (one may be written)."""
        cycle = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _count(self, reason: str) -> None:
        rejections = self.app_state.get(REJECTIONS_KEY)
        if isinstance(rejections, Rejections):
            rejections.add(reason)


class HeadDeadlines:
    """Closes the connections whose head is late: one sweep a second over the open
    connections, while there are any.

    A sweep rather than a timer per connection (the way Node bounds its
    headersTimeout): a timer armed at each connection and cancelled at its first head
    cost about 2.4 µs a connection (asyncio's call_later and cancel), a quarter of
    what uvicorn's protocol itself costs an in-memory connection; the sweep costs 0.1
    µs a connection a second, and a deadline is met within a second.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, connections: Set[Any], timeout_s: float
    ) -> None:
        self._loop = loop
        self._connections = connections
        self._period_s = min(1.0, timeout_s)
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Sweep from now on (a connection has opened)."""
        if self._timer is None:
            self._timer = self._loop.call_later(self._period_s, self._sweep)

    def _sweep(self) -> None:
        now = self._loop.time()
        late = [
            connection
            for connection in self._connections
            if 0.0 < getattr(connection, "head_deadline", 0.0) <= now
        ]
        for connection in late:
            connection.head_timed_out()
        self._timer = None
        if self._connections:
            self.watch()


async def _answer_431(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 431, "headers": _TOO_LARGE_HEADERS})
    await send({"type": "http.response.body", "body": _TOO_LARGE_BODY})
