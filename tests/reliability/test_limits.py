"""Connection and request limits against a real `aiva serve`, over raw sockets: request
heads (size, header count, a deadline), idle and slow-loris connections, load shedding,
chunked bodies over the body limit, and the same limits in `--workers` processes.

Every test is bounded: in bytes sent, in sockets, and by a deadline on every loop.
"""

from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from infra.service import REPO_ROOT, SRC_DIR, AivaService

APP_ARGS = ["tests.apps.limits_service:build", "--factory"]
ENV = {
    "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)]),
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",
}
HEADER_TIMEOUT_S = 2.0
# How late past the head timeout a connection may still be closed (a shared machine).
MARGIN_S = 3.0
MB = 1024 * 1024


@pytest.fixture
def serve(aiva_service: Callable[..., AivaService]) -> Callable[..., AivaService]:
    """Factory: the limits test app under `aiva serve`, with extra AIVA_* settings."""

    def start(settings: dict[str, str] | None = None, workers: int = 1) -> AivaService:
        args = [*APP_ARGS, *(["--workers", str(workers)] if workers > 1 else [])]
        return aiva_service(env={**ENV, **(settings or {})}, args=args, ready_path="/livez")

    return start


def _connect(service: AivaService) -> socket.socket:
    return socket.create_connection((service.host, service.port), timeout=5)


def _read_until_closed(sock: socket.socket, deadline: float, limit: int = 64 * 1024) -> bytes:
    """What the server sends until it closes (or resets) the connection; raises
    TimeoutError when it is still open at `deadline`."""
    received = b""
    while len(received) < limit:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        except TimeoutError:
            raise TimeoutError(f"still open; received {received[:80]!r}") from None
        if not chunk:
            return received
        received += chunk
    return received


def _status(answer: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 answer, None when there is none."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def _livez_seconds(service: AivaService) -> float:
    started = time.monotonic()
    assert httpx.get(service.base_url + "/livez", timeout=5).status_code == 200
    return time.monotonic() - started


def _rss(service: AivaService) -> int:
    assert service.pid is not None
    return int(psutil.Process(service.pid).memory_info().rss)


# --- request heads ---------------------------------------------------------------------


@dataclass
class Flood:
    """One attacker: connection after connection (a tenth of a second apart), each
    sending a header value without end (up to `each` bytes) until the server stops it,
    for `seconds` or `total` bytes in all."""

    each: int
    total: int
    seconds: float
    sent: list[int] = field(default_factory=list)  # per connection
    answers: list[bytes] = field(default_factory=list)
    error: str = ""

    def run(self, service: AivaService) -> None:
        until = time.monotonic() + self.seconds
        while time.monotonic() < until and sum(self.sent) < self.total:
            try:
                self._one(service, until + 10)
            except OSError as error:  # TimeoutError among them: still open at the deadline
                self.error = repr(error)
                return
            time.sleep(0.1)

    def _one(self, service: AivaService, deadline: float) -> None:
        piece = b"a" * (64 * 1024)
        sent = 0
        with _connect(service) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Flood: ")
            try:
                while sent < self.each and time.monotonic() < deadline:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    sock.sendall(piece)
                    sent += len(piece)
            except (ConnectionResetError, BrokenPipeError):
                pass  # the server closed it: what should happen
            finally:
                self.sent.append(sent)
            self.answers.append(_read_until_closed(sock, deadline))


@dataclass
class Prober:
    """Asks /livez every 0.1 s until stopped; keeps the slowest answer's seconds."""

    service: AivaService
    slowest: float = 0.0
    answers: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = httpx.get(self.service.base_url + "/livez", timeout=5).status_code
            except httpx.HTTPError as error:
                self.failures.append(repr(error))
            else:
                if status != 200:
                    self.failures.append(f"status {status}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.answers += 1
            self.stop.wait(0.1)


@pytest.mark.fast_layer("uvicorn_protocol")
def test_a_header_flood_is_cut_memory_stays_bounded_and_probes_answer(
    serve: Callable[..., AivaService],
) -> None:
    # The attack: 20 connections sending 50 MB of one header each (the code
    # before the limits took the process to 1.17 GB, with 4.75 s stalls), here renewed
    # as each is cut, for 4 s. Default limits.
    service = serve()
    rss_before = _rss(service)
    floods = [Flood(each=50 * MB, total=100 * MB, seconds=4) for _ in range(20)]
    threads = [threading.Thread(target=f.run, args=(service,)) for f in floods]
    prober = Prober(service)
    probing = threading.Thread(target=prober.run)
    probing.start()
    attack_started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    prober.stop.set()
    probing.join(timeout=10)
    attack_s = time.monotonic() - attack_started
    rss_after = _rss(service)
    sent = [n for f in floods for n in f.sent]
    print(  # the figures the issue asks for, shown with -s
        f"RSS {rss_before / MB:.0f} MB -> {rss_after / MB:.0f} MB; slowest /livez "
        f"{prober.slowest:.3f} s over {prober.answers} probes; {len(sent)} connections, "
        f"{sum(sent) / MB:.0f} MB sent in {attack_s:.1f} s, {max(sent) / MB:.1f} MB on one "
        "at most"
    )
    assert not any(thread.is_alive() for thread in threads)
    assert not [f.error for f in floods if f.error]
    # Each was stopped near the 32 KiB head limit: what the sockets' buffers held.
    assert max(sent) < 16 * MB
    assert all(_status(answer) in (431, None) for f in floods for answer in f.answers)
    assert rss_after - rss_before < 100 * MB
    assert not prober.failures
    assert prober.answers >= 5
    assert prober.slowest < 1.0
    assert _livez_seconds(service) < 1.0


@pytest.mark.fast_layer("uvicorn_protocol")
def test_a_head_over_the_size_limit_gets_431_in_one_piece_or_many(
    serve: Callable[..., AivaService],
) -> None:
    service = serve({"AIVA_SERVER__LIMITS__MAX_HEADER_BYTES": "8192"})
    deadline = time.monotonic() + 10
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    with _connect(service) as sock:  # in one read
        sock.sendall(big)
        assert _status(_read_until_closed(sock, deadline)) == 431
    with _connect(service) as sock:  # in pieces
        for start in range(0, len(big), 1000):
            sock.sendall(big[start : start + 1000])
            time.sleep(0.01)
        assert _status(_read_until_closed(sock, deadline)) == 431
    fits = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 7000 + b"\r\nConnection: close\r\n\r\n"
    with _connect(service) as sock:
        sock.sendall(fits)
        assert _status(_read_until_closed(sock, deadline)) == 200


@pytest.mark.fast_layer("uvicorn_protocol")
def test_too_many_headers_get_431(serve: Callable[..., AivaService]) -> None:
    service = serve()  # 100 header lines at most by default
    deadline = time.monotonic() + 10

    def head(count: int) -> bytes:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(count - 2))
        return b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"Connection: close\r\n\r\n"

    with _connect(service) as sock:
        sock.sendall(head(150))
        answer = _read_until_closed(sock, deadline)
    assert _status(answer) == 431, answer[:200]
    assert answer.endswith(b"Request Header Fields Too Large\n")
    with _connect(service) as sock:
        sock.sendall(head(100))
        assert _status(_read_until_closed(sock, deadline)) == 200


# --- connections that never complete a head -------------------------------------------


@pytest.mark.fast_layer("uvicorn_protocol")
def test_idle_connections_are_closed_after_the_head_timeout(
    serve: Callable[..., AivaService],
) -> None:
    # The code before the limits kept such sockets open forever (5,000 in the issue).
    service = serve({"AIVA_SERVER__LIMITS__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)})
    selector = selectors.DefaultSelector()
    opened = time.monotonic()
    closed_after: dict[int, float] = {}
    answers: dict[int, bytes] = {}
    sockets = []
    for index in range(200):
        sock = _connect(service)
        if index % 2:  # half send part of a head, half nothing at all
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
        sockets.append(sock)
        answers[index] = b""
    deadline = opened + HEADER_TIMEOUT_S + MARGIN_S
    try:
        while len(closed_after) < len(sockets) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.2):
                index = key.data
                try:
                    chunk = sockets[index].recv(4096)
                except ConnectionResetError:
                    chunk = b""
                answers[index] += chunk
                if not chunk:
                    closed_after[index] = time.monotonic() - opened
                    selector.unregister(sockets[index])
    finally:
        selector.close()
        for sock in sockets:
            sock.close()
    assert len(closed_after) == 200, f"{200 - len(closed_after)} still open"
    assert min(closed_after.values()) > HEADER_TIMEOUT_S * 0.5  # not closed before it
    assert all(_status(answers[i]) == 408 for i in range(1, 200, 2))
    assert all(answers[i] == b"" for i in range(0, 200, 2))
    assert _livez_seconds(service) < 1.0


@pytest.mark.fast_layer("uvicorn_protocol")
def test_a_slow_loris_is_cut(serve: Callable[..., AivaService]) -> None:
    service = serve({"AIVA_SERVER__LIMITS__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)})
    for first in (b"", b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"):  # new, or kept alive
        with _connect(service) as sock:
            if first:
                sock.sendall(first)
                assert _whole_response(sock).startswith(b"HTTP/1.1 200")
            assert HEADER_TIMEOUT_S * 0.5 < _dribble(sock) < HEADER_TIMEOUT_S + MARGIN_S


def _whole_response(sock: socket.socket) -> bytes:
    """One response, head and body (its Content-Length), read whole: a body that comes in
    a second segment must not be taken for the answer to what is sent next."""
    sock.settimeout(5.0)
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        body += sock.recv(4096)
    return data


def _dribble(sock: socket.socket) -> float:
    """Send a head one byte a second; the seconds until the server answers or closes."""
    started = time.monotonic()
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 20:
        if time.monotonic() - started > HEADER_TIMEOUT_S + MARGIN_S:
            break
        try:
            sock.sendall(bytes([byte]))
            sock.settimeout(1.0)
            sock.recv(4096)  # an answer (408), or b"": closed
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            pass
        return time.monotonic() - started
    raise AssertionError("the slow head was not cut")


def test_idle_kept_alive_connections_close_after_the_keepalive_timeout(
    serve: Callable[..., AivaService],
) -> None:
    service = serve({"AIVA_SERVER__LIMITS__KEEPALIVE_TIMEOUT_S": "1"})
    with _connect(service) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answer = _read_until_closed(sock, started + 1 + MARGIN_S)
    assert _status(answer) == 200
    assert 0.5 < time.monotonic() - started < 1 + MARGIN_S


# --- load shedding -----------------------------------------------------------------------


def test_past_max_concurrency_requests_get_503_and_probes_still_answer(
    serve: Callable[..., AivaService],
) -> None:
    service = serve({"AIVA_SERVER__LIMITS__MAX_CONCURRENCY": "2"})
    slow_answers: list[int] = []

    def slow() -> None:
        slow_answers.append(httpx.get(service.base_url + "/slow?s=3", timeout=15).status_code)

    with service.client() as client:
        before = _rejected(client, "overload")
        slow_ones = [threading.Thread(target=slow) for _ in range(2)]
        for thread in slow_ones:
            thread.start()
        deadline = time.monotonic() + 2.5
        shed = client.get("/")  # sent once both slow ones are in flight (polled)
        while shed.status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
            shed = client.get("/")
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert shed.headers["x-request-id"]
        for probe in ("/livez", "/readyz", "/health/live", "/health/ready"):
            assert client.get(probe).status_code == 200, probe
        assert _rejected(client, "overload") >= before + 1
        for thread in slow_ones:
            thread.join(timeout=15)
        assert slow_answers == [200, 200]
        assert client.get("/").status_code == 200  # in flight again below the limit


def _rejected(client: httpx.Client, reason: str) -> float:
    """aiva_http_rejected_total{reason} on /metrics (the series exists from start-up)."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("aiva_http_rejected_total{") and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no aiva_http_rejected_total{{reason={reason!r}}} series")


# --- bodies ------------------------------------------------------------------------------


def test_a_chunked_body_over_the_limit_gets_413_and_is_read_no_further(
    serve: Callable[..., AivaService],
) -> None:
    limit = 100_000
    service = serve({"AIVA_SECURITY__MAX_REQUEST_BODY_BYTES": str(limit)})
    piece = b"x" * 10_000
    chunk = b"%x\r\n%b\r\n" % (len(piece), piece)
    sent = 0
    answer = b""
    closed = False
    deadline = time.monotonic() + 10
    with _connect(service) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        # Up to 5 MB, reading what comes back between chunks, until the server closes.
        while sent < 5 * MB and time.monotonic() < deadline and not closed:
            try:
                sock.sendall(chunk)
                sent += len(piece)
                sock.settimeout(0.01)
                received = sock.recv(4096)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            answer += received
            closed = not received
    assert _status(answer) == 413, answer[:200]
    assert closed, f"still open after {sent} bytes"
    assert sent < 2 * MB  # the rest of the body was never read
    most_seen = int(httpx.get(service.base_url + "/uploaded", timeout=5).text)
    assert 0 < most_seen <= limit


# --- the same limits in every worker ------------------------------------------------------


@pytest.mark.fast_layer("uvicorn_protocol")
def test_workers_get_the_same_limits(serve: Callable[..., AivaService]) -> None:
    service = serve(
        {
            "AIVA_SERVER__LIMITS__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "AIVA_SERVER__LIMITS__MAX_HEADERS": "20",
        },
        workers=2,
    )
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(30))
    too_many = b"GET /pid HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"
    refused_by: set[bytes] = set()  # the workers that answered 431
    timed_out_by: set[bytes] = set()  # and those that closed an unfinished head
    deadline = time.monotonic() + 60
    for _ in range(200):  # fresh connections, until each worker has taken both kinds
        if (len(refused_by), len(timed_out_by)) == (2, 2) or time.monotonic() > deadline:
            break
        with _connect(service) as sock:
            worker = _worker(sock)
            if worker not in refused_by:
                sock.sendall(too_many)
                assert _status(_read_until_closed(sock, deadline)) == 431
                refused_by.add(worker)
            elif worker not in timed_out_by:
                sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n")
                started = time.monotonic()
                answer = _read_until_closed(sock, started + HEADER_TIMEOUT_S + MARGIN_S)
                assert _status(answer) == 408
                timed_out_by.add(worker)
    assert (len(refused_by), len(timed_out_by)) == (2, 2), (refused_by, timed_out_by)


def _worker(sock: socket.socket) -> bytes:
    """The process id of the worker serving this kept-alive connection."""
    sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    sock.settimeout(5)
    while b"\r\n\r\n" not in received or len(received) < _answer_length(received):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received.split(b"\r\n\r\n", 1)[1]


def _answer_length(answer: bytes) -> int:
    """A whole answer's bytes, from its head's Content-Length."""
    head = answer.split(b"\r\n\r\n", 1)[0]
    length = head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]
    return len(head) + 4 + int(length)
