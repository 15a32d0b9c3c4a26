"""Pick free 127.0.0.1 TCP ports (never a default port, never the same one twice per run)."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_issued: set[int] = set()
_lock = threading.Lock()


def _probe_port(host: str) -> int:
    """Let the kernel pick an unused ephemeral port on host and release it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on host now and was not handed out before in this process."""
    with _lock:
        for _ in range(200):
            port = _probe_port(host)
            if port not in _issued:
                _issued.add(port)
                return port
    raise RuntimeError(f"could not find an unused TCP port on {host}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return count distinct free ports."""
    return [free_port(host) for _ in range(count)]


def is_listening(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
