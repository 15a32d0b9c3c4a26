"""In-process CPU cost of uvicorn's HTTP protocols: stock httptools, stock h11, and aiva's
limited httptools protocol (aiva.web.protocol), each fed requests on an in-memory
transport with a minimal ASGI app (no network, no wrk): what the parser and the protocol
cost a request, and what aiva's head limits add to it.

Two figures each: µs a request on a kept-alive connection (the usual case), and µs a
connection opened, used for one request and closed (where aiva arms and cancels the
head timer). Rounds are interleaved; each figure is the median over rounds (and the
fastest round, the better estimate on a busy machine).

Run: `taskset -c 0 python benchmarks/http_protocol_inprocess.py [--rounds 9]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

REQUEST = (
    b"GET /api/demo/items/1 HTTP/1.1\r\nHost: api.example:8443\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/126.0.0.0 Safari/537.36\r\nAccept: application/json\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n\r\n"
)


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


class Transport(asyncio.Transport):
    """An in-memory socket: keeps nothing it is written, answers the address queries."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


def protocol_factory(variant: str) -> Any:
    import uvicorn
    from uvicorn.server import ServerState

    from aiva.web.protocol import HeadLimits, http_protocol

    http: Any = variant
    if variant == "aiva":
        http = http_protocol(HeadLimits(32768, 100, 10.0))
    config = uvicorn.Config(app, http=http, log_config=None, lifespan="off", access_log=False)
    config.load()
    state = ServerState()
    app_state: dict[str, Any] = {}  # one for all connections, as uvicorn's server has

    def make(loop: asyncio.AbstractEventLoop) -> Any:
        if app_state.get("loop") is not loop:  # a new round: a new loop
            app_state.clear()
            app_state["loop"] = loop
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state=app_state, _loop=loop
        )

    return make


async def _answered(protocol: Any) -> None:
    while protocol.cycle is None or not protocol.cycle.response_complete:
        await asyncio.sleep(0)


async def kept_alive_us(make: Any, requests: int) -> float:
    protocol = make(asyncio.get_running_loop())
    transport = Transport()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        await _answered(protocol)
    spent = time.process_time() - started
    protocol.connection_lost(None)
    return spent / requests * 1e6


async def per_connection_us(make: Any, connections: int) -> float:
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(connections):
        protocol = make(loop)
        transport = Transport()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(REQUEST)
        await _answered(protocol)
        protocol.connection_lost(None)
    return (time.process_time() - started) / connections * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=20000)
    opts = parser.parse_args()
    makers = {variant: protocol_factory(variant) for variant in ("httptools", "h11", "aiva")}
    kept: dict[str, list[float]] = {name: [] for name in makers}
    fresh: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(opts.rounds):
        for name, make in makers.items():
            kept[name].append(asyncio.run(kept_alive_us(make, opts.requests)))
            fresh[name].append(asyncio.run(per_connection_us(make, opts.requests // 4)))
    for name in makers:
        print(
            f"{name:10s} {statistics.median(kept[name]):6.2f} µs a kept-alive request "
            f"(fastest round {min(kept[name]):.2f}), {statistics.median(fresh[name]):6.2f} µs "
            f"a one-request connection (fastest {min(fresh[name]):.2f})"
        )
    for figures, what in ((kept, "kept-alive request"), (fresh, "one-request connection")):
        added = [a - b for a, b in zip(figures["aiva"], figures["httptools"], strict=True)]
        print(
            f"aiva's limits add {statistics.median(added):.2f} µs a {what} "
            f"(per round {', '.join(f'{x:.2f}' for x in added)})"
        )


if __name__ == "__main__":
    main()
