"""The local upstream of the httpx comparison: a minimal HTTP/1.1 server, and its launcher.

Run as a script (`python benchmarks/upstream.py PORT`) it answers every GET with one
fixed small JSON body on keep-alive connections: a raw asyncio protocol, stdlib only,
so that it costs a few µs a request on the core it shares (see `Upstream`). It reads
no request body: the benchmark only sends GETs.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOADGEN_CORE,
    LOOPBACK,
    BenchError,
    Owned,
    Registry,
    clean_env,
    free_port,
    is_listening,
    tail,
    wait_until,
)

UPSTREAM_PATH = "/upstream"
BODY = b'{"upstream":"ok"}'
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)
END_OF_HEAD = b"\r\n\r\n"
MAX_HEAD_BYTES = 64 * 1024  # a longer head is no request of ours: the connection is closed


class _Answer(asyncio.Protocol):
    """One connection: one fixed response per request head received (pipelining too)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        self._pending += data
        heads = self._pending.count(END_OF_HEAD)
        if heads:
            self._transport.write(RESPONSE * heads)
            self._pending = self._pending[self._pending.rindex(END_OF_HEAD) + len(END_OF_HEAD) :]
        elif len(self._pending) > MAX_HEAD_BYTES:
            self._transport.close()


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(_Answer, host, port, backlog=1024)
    async with server:
        await stop.wait()


# --- the launcher (used by overhead.py) ------------------------------------------------------


class Upstream:
    """The upstream for the whole run, pinned to the load-generator core.

    With two cores, it shares one with the server under test or with wrk and rotel. The
    server's core is the measured one (its CPU time per request is the result), so the
    upstream goes with wrk and rotel: at a few µs a request it takes a small slice of
    that core, and the server's CPU time does not include it either way.
    """

    def __init__(self, workdir: Path, registry: Registry) -> None:
        """Pick a port; start() runs it."""
        self.port = free_port()
        argv = [
            "taskset", "-c", LOADGEN_CORE, sys.executable, str(Path(__file__).resolve()),
            str(self.port),
        ]  # fmt: skip
        self._owned = Owned("upstream", argv, workdir / "upstream.out", clean_env({}))
        self._registry = registry

    @property
    def url(self) -> str:
        """What the server's route GETs."""
        return f"http://{LOOPBACK}:{self.port}{UPSTREAM_PATH}"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it listens."""
        self._registry.start(self._owned)
        ready = wait_until(
            lambda: not self._owned.running or is_listening(LOOPBACK, self.port), timeout
        )
        if not ready or not self._owned.running:
            raise BenchError(f"the upstream did not start: {tail(self._owned.log_path)}")

    def check_alive(self) -> None:
        """Raise when the upstream has died."""
        if not self._owned.running:
            raise BenchError(f"the upstream exited: {tail(self._owned.log_path)}")


if __name__ == "__main__":
    asyncio.run(_serve(LOOPBACK, int(sys.argv[1])))
