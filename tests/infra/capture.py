"""A minimal OTLP/HTTP receiver that keeps each request's head (threads, stdlib):
answers 200 with an empty body, which OTLP/HTTP clients take as a full success."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .ports import LOOPBACK, free_port


class HeadCapture:
    """Records (path, lower-cased headers) of every POST it receives; answers after
    `delay_s` (a slow collector)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.port = free_port(LOOPBACK)
        self.requests: list[tuple[str, dict[str, str]]] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                self.rfile.read(length)
                capture.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                time.sleep(delay_s)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
