"""Fault-injecting TCP proxy (threads): pass / refuse / blackhole at run time, with counters."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass
from typing import Literal

from .ports import LOOPBACK, free_port

Mode = Literal["pass", "refuse", "blackhole"]
MODES: tuple[Mode, ...] = ("pass", "refuse", "blackhole")
_POLL = 0.05
_CHUNK = 65536


@dataclass
class ProxyStats:
    """Counters since start (or reset_counters())."""

    accepted: int = 0
    upstream_connections: int = 0
    upstream_failures: int = 0
    bytes_up: int = 0
    chunks_up: int = 0
    bytes_down: int = 0
    chunks_down: int = 0


def _shutdown(sock: socket.socket) -> None:
    """shutdown(SHUT_RDWR) (ignoring sockets already gone); wakes a thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Connection:
    """One accepted client: forwarded to the target (pass) or held silently (blackhole)."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, mode: Mode) -> None:
        """Remember the sockets; the serving thread owns and closes them."""
        self.proxy = proxy
        self.client = client
        self.mode = mode
        self.upstream: socket.socket | None = None
        self.cut = threading.Event()
        self.thread = threading.Thread(
            target=self._serve, name=f"proxy-conn-{proxy.port}", daemon=True
        )

    def close_now(self) -> None:
        """Ask the serving thread to drop the connection (both directions)."""
        self.cut.set()
        _shutdown(self.client)
        if self.upstream is not None:
            _shutdown(self.upstream)

    def _serve(self) -> None:
        """Serve until either side closes or the proxy cuts us; always closes our sockets."""
        try:
            if self.mode == "pass":
                self._forward()
            else:
                self._swallow()
        except OSError:
            pass
        finally:
            if self.upstream is not None:
                self.upstream.close()
            self.client.close()
            self.proxy._forget(self)

    def _swallow(self) -> None:
        """Blackhole: read and discard whatever the client sends, never answer."""
        self.client.settimeout(_POLL)
        while not self.cut.is_set():
            try:
                if not self.client.recv(_CHUNK):
                    return
            except TimeoutError:
                continue

    def _connect_upstream(self) -> bool:
        """Open the connection to the target; False (and counted) when it fails."""
        try:
            self.upstream = socket.create_connection(
                (self.proxy.target_host, self.proxy.target_port), timeout=5.0
            )
        except OSError:
            self.proxy._count(upstream_failures=1)
            return False
        self.proxy._count(upstream_connections=1)
        return not self.cut.is_set()

    def _forward(self) -> None:
        """Pass: copy bytes both ways, counting chunks and bytes per direction."""
        if not self._connect_upstream():
            return
        assert self.upstream is not None
        self.client.setblocking(False)
        self.upstream.setblocking(False)
        with selectors.DefaultSelector() as sel:
            sel.register(self.client, selectors.EVENT_READ, (self.client, self.upstream, True))
            sel.register(self.upstream, selectors.EVENT_READ, (self.upstream, self.client, False))
            while not self.cut.is_set():
                for key, _ in sel.select(_POLL):
                    if not self._pump(*key.data):
                        return

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> bool:
        """Move one chunk from src to dst; False when src closed."""
        try:
            data = src.recv(_CHUNK)
        except BlockingIOError:
            return True
        if not data:
            return False
        dst.settimeout(5.0)
        try:
            dst.sendall(data)
        finally:
            dst.setblocking(False)
        if upstream:
            self.proxy._count(bytes_up=len(data), chunks_up=1)
        else:
            self.proxy._count(bytes_down=len(data), chunks_down=1)
        return True


def _close_all(connections: list[_Connection]) -> None:
    """Cut the connections and join their threads (bounded)."""
    for conn in connections:
        conn.close_now()
    for conn in connections:
        conn.thread.join(timeout=2.0)


class TcpProxy:
    """Listens on 127.0.0.1:port and forwards to target_host:target_port according to mode.

    - pass: forward both ways.
    - refuse: the listening socket is closed, so connects get ECONNREFUSED.
    - blackhole: connections are accepted, never answered nor forwarded (clients time out).
    Switching mode cuts every existing connection. The listen port stays the same across modes.
    """

    def __init__(
        self, target_host: str, target_port: int, host: str = LOOPBACK, port: int | None = None
    ) -> None:
        """Pick the listen port; nothing listens until start()."""
        self.host = host
        self.port = port or free_port(host)
        self.target_host = target_host
        self.target_port = target_port
        self.stats = ProxyStats()
        self._mode: Mode = "pass"
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop_accepting = threading.Event()

    @property
    def address(self) -> str:
        """host:port clients should connect to."""
        return f"{self.host}:{self.port}"

    @property
    def mode(self) -> Mode:
        """Current mode."""
        return self._mode

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return self.stats.accepted

    @property
    def active_connections(self) -> int:
        """Connections currently open through the proxy."""
        with self._lock:
            return len(self._connections)

    def start(self, mode: Mode = "pass") -> None:
        """Start in mode (listening unless mode is refuse)."""
        self.set_mode(mode)

    def set_mode(self, mode: Mode) -> None:
        """Switch mode now: a change cuts open connections; refuse stops listening."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; expected one of {MODES}")
        with self._lock:
            changed, self._mode = mode != self._mode, mode
            connections = list(self._connections) if changed else []
        _close_all(connections)
        if mode == "refuse":
            self._unlisten()
        else:
            self._listen()

    def cut_connections(self) -> None:
        """Drop every open connection (clients see a reset/EOF)."""
        with self._lock:
            connections = list(self._connections)
        _close_all(connections)

    def reset_counters(self) -> None:
        """Zero all counters."""
        with self._lock:
            self.stats = ProxyStats()

    def stop(self) -> None:
        """Stop listening and cut everything; joins all threads (bounded)."""
        self._unlisten()
        self.cut_connections()

    def _listen(self) -> None:
        """Bind the listen port (SO_REUSEADDR) and start the acceptor thread, unless listening."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(128)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._stop_accepting.clear()
        self._acceptor = threading.Thread(
            target=self._accept_loop,
            args=(listener,),
            name=f"proxy-accept-{self.port}",
            daemon=True,
        )
        self._acceptor.start()

    def _unlisten(self) -> None:
        """Stop the acceptor thread, then close the listening socket (new connects are refused)."""
        if self._listener is None:
            return
        self._stop_accepting.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5.0)
        self._listener.close()
        self._listener = None
        self._acceptor = None

    def _accept_loop(self, listener: socket.socket) -> None:
        """Accept clients until told to stop; each gets a thread serving the current mode."""
        with selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ)
            while not self._stop_accepting.is_set():
                if sel.select(_POLL):
                    self._accept_one(listener)

    def _accept_one(self, listener: socket.socket) -> None:
        """Accept one pending client and hand it to a connection thread."""
        try:
            client, _ = listener.accept()
        except OSError:
            return
        with self._lock:  # mode read and registration are atomic w.r.t. set_mode()
            conn = _Connection(self, client, self._mode)
            self.stats.accepted += 1
            self._connections.add(conn)
        conn.thread.start()

    def _forget(self, conn: _Connection) -> None:
        """Called by a connection thread when it is done."""
        with self._lock:
            self._connections.discard(conn)

    def _count(self, **increments: int) -> None:
        """Add to counters under the lock."""
        with self._lock:
            for name, value in increments.items():
                setattr(self.stats, name, getattr(self.stats, name) + value)
