"""Private redis-server in the foreground (we own its PID) on a free port, no persistence."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .ports import LOOPBACK, free_port
from .processes import ManagedProcess

INSTALL_HINT = "apt-get install -y --no-install-recommends redis-server"


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a raw RESP PING on host:port answers +PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """redis-server --port P --bind 127.0.0.1 --save "" --appendonly no; restartable."""

    def __init__(self, binary: str, workdir: Path, host: str = LOOPBACK) -> None:
        """Pick the port; nothing runs until start()."""
        self.host = host
        self.port = free_port(host)
        self.workdir = workdir
        self.log_path = workdir / "redis.log"
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._process = ManagedProcess(
            argv=argv, log_path=self.log_path, env=env, cwd=workdir, name="redis-server"
        )

    @property
    def url(self) -> str:
        """redis://127.0.0.1:PORT/0."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the server."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the server is alive."""
        return self._process.running

    def ping(self) -> bool:
        """True when the server answers PING."""
        return ping(self.host, self.port)

    def start(self, timeout: float = 10.0) -> None:
        """Start (again) and wait until it answers PING."""
        self._process.start(self.ping, timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM by PID (SIGKILL after timeout); reaped. Data is gone (no persistence)."""
        return self._process.stop(timeout)

    def kill(self) -> int | None:
        """SIGKILL by PID."""
        return self._process.kill()

    def log_text(self) -> str:
        """Server log (all runs)."""
        return self._process.log_text()
