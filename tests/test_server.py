"""aiva's uvicorn server class, run in-process on a real socket."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from aiva.heap import DEFAULT_YOUNG_THRESHOLD, SERVER_YOUNG_THRESHOLD
from aiva.server import _Server
from infra.ports import free_port


async def _hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_start_up_leaves_its_heap_frozen_and_serves() -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(DEFAULT_YOUNG_THRESHOLD, *thresholds[1:])
    port = free_port()
    app = Starlette(routes=[Route("/", _hello)])
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        # uvicorn marks itself started inside startup(); the freeze follows it.
        while not gc.get_freeze_count() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        assert gc.get_freeze_count() > 0, "start-up did not freeze its heap within 10 s"
        if sys.version_info < (3, 14):  # left alone on 3.14's collector (aiva.heap)
            assert gc.get_threshold()[0] == SERVER_YOUNG_THRESHOLD
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5, trust_env=False).text == "hello"
    finally:
        server.should_exit = True
        thread.join(10)
        gc.unfreeze()  # the test process goes on collecting as before
        gc.set_threshold(*thresholds)
    assert not thread.is_alive()
