"""`aiva serve --workers N`: uvicorn's supervisor, with aiva's server in every worker.

uvicorn.run(..., workers=N) runs its plain `Server` in each worker: no readiness 503 at
SIGTERM, no frozen start-up heap, and a worker ending on the SIGTERM it re-raises (-15).
This keeps uvicorn's supervision (replacing a worker that died, health pings, SIGHUP,
SIGTTIN/SIGTTOU) and only changes what a worker runs, and how fast the workers hear of a
stop signal.

Written against uvicorn 0.54.0 (uvicorn.supervisors.multiprocess), checked at start-up
by the fast layer's self-test (`supervisor_works`); without it, uvicorn's own supervisor
runs uvicorn's plain server in each worker (`serve_plain_workers`). What it relies on:
- `Process.target` runs in the child and serves through the `Process.server` property;
- the supervisor's methods build their workers as `Process(config, sockets)`, a name they
  look up in their module's globals (checked by the self-test and by
  tests/test_workers.py, so that an upgrade adding another such method fails a test
  instead of starting plain uvicorn workers);
- the supervisor's signal handlers only queue the signal, handled at its next tick
  (every 0.5 s): forwarded at once here, since readiness must turn 503 within 100 ms.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from socket import socket
from types import FrameType, FunctionType
from typing import Any, TypeVar, cast

from uvicorn import Config, Server
from uvicorn.supervisors import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from aiva.server import _exit_cleanly_after_shutdown, _Server

logger = logging.getLogger(__name__)
_Method = TypeVar("_Method", bound=Callable[..., Any])
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AivaWorker(Process):
    """One worker process: aiva's server, and exit code 0 after its graceful shutdown."""

    _aiva_server: _Server | None = None
    _told_to_stop = False

    @property
    def server(self) -> Server:
        if self._aiva_server is None:
            self._aiva_server = _Server(config=self.config)
        return self._aiva_server

    def target(self, sockets: list[socket] | None = None) -> None:
        # In the child. Built before uvicorn starts the health-ping thread, which reads
        # `server.started`: both threads must see the one server.
        self._aiva_server = _Server(config=self.config)
        with _exit_cleanly_after_shutdown():
            super().target(sockets)

    def stop_now(self) -> None:
        """SIGTERM to the worker, from the parent's signal handler (os.kill only)."""
        if self._told_to_stop or self.pid is None:
            return
        self._told_to_stop = True
        with contextlib.suppress(ProcessLookupError):  # ended already
            os.kill(self.pid, signal.SIGTERM)

    def terminate(self) -> None:
        if not self._told_to_stop:
            super().terminate()
            return
        # Told already (stop_now): a second SIGTERM would only be logged twice.
        self.parent_conn.close()
        self.child_conn.close()

    def join(self) -> None:
        super().join()
        # A worker ends with 0 after its graceful shutdown (target): anything else is
        # worth a line (uvicorn says nothing about how its workers ended).
        if self.exitcode not in (0, None):
            logger.warning("worker [%s] ended with exit code %s", self.pid, self.exitcode)


def _making_aiva_workers(method: _Method) -> _Method:
    """uvicorn's own method, unchanged, its `Process` meaning AivaWorker.

    A copy of each method would drift from uvicorn's; replacing the module's `Process`
    would change every other user of uvicorn in the process.
    """
    function = cast(FunctionType, method)
    namespace = {**vars(multiprocess), "Process": AivaWorker}
    rebound = FunctionType(
        function.__code__,
        namespace,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__qualname__ = function.__qualname__
    rebound.__doc__ = function.__doc__
    return cast(_Method, rebound)


# uvicorn 0.54.0's supervisor methods that start workers (tests/test_workers.py checks
# this is all of them).
WORKER_STARTING_METHODS = (
    "init_processes",
    "restart_all",
    "keep_subprocess_alive",
    "handle_ttin",
)


class AivaMultiprocess(Multiprocess):
    """uvicorn's supervisor starting AivaWorkers, telling them at once of SIGTERM/SIGINT."""

    init_processes = _making_aiva_workers(Multiprocess.init_processes)
    restart_all = _making_aiva_workers(Multiprocess.restart_all)
    handle_ttin = _making_aiva_workers(Multiprocess.handle_ttin)
    _keep_alive = _making_aiva_workers(Multiprocess.keep_subprocess_alive)

    def __init__(self, config: Config, sockets: list[socket]) -> None:
        super().__init__(config, sockets)
        self._stopping = False
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._stop_signal)

    def _stop_signal(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn's handling still follows at its next tick (it sets `should_exit`, which
        # a signal handler must not: threading.Event.set could deadlock on the lock the
        # interrupted main thread holds). The workers hear of it now.
        self.signal_queue.append(sig)
        self._stopping = True
        for process in list(self.processes):
            if isinstance(process, AivaWorker):
                process.stop_now()

    def keep_subprocess_alive(self) -> None:
        # A worker that ends because it was told to stop is not replaced.
        if not self._stopping:
            self._keep_alive()


def serve_workers(config: Config) -> None:
    """Bind the socket once, as uvicorn.run does, and supervise `config.workers` workers."""
    sock = config.bind_socket()
    try:
        AivaMultiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def serve_plain_workers(config: Config) -> None:
    """uvicorn's own supervisor and workers, as `uvicorn.run(..., workers=N)` runs them."""
    sock = config.bind_socket()
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()


def supervisor_works() -> str | None:
    """uvicorn's supervisor still starts its workers in exactly these methods, by the
    name `Process`, and its workers serve through `Process.server` from `target`."""
    starting = sorted(
        name
        for name, member in vars(Multiprocess).items()
        if "Process" in getattr(getattr(member, "__code__", None), "co_names", ())
    )
    if starting != sorted(WORKER_STARTING_METHODS):
        return f"its methods starting workers are {starting}"
    target = getattr(getattr(Process, "target", None), "__code__", None)
    if target is None or "server" not in target.co_names:
        return "Process.target no longer serves through Process.server"
    if not isinstance(vars(Process).get("server"), property):
        return "Process.server is no longer a property"
    return None
