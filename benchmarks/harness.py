"""Plumbing for benchmarks/overhead: owned subprocesses, rotel, wrk and their measurements."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
SERVER_CORE = "0"
LOADGEN_CORE = "1"

log = logging.getLogger("overhead")


class BenchError(RuntimeError):
    """A component failed (did not start, crashed, or answered wrongly)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_listening(host: str, port: int) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a text file ('' when missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int | None) -> str:
    """'exited with 2', 'killed by SIGPIPE', or 'still running'."""
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


def rotel_binary() -> str:
    """Path of rotel-agent inside the installed `rotel` package."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("rotel is not installed (pip install rotel)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    if not binary.is_file():
        raise BenchError(f"rotel-agent not found at {binary}")
    return str(binary)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Our environment without OTEL_*/AIVA_*/ROTEL_* variables, plus extra."""
    prefixes = ("OTEL_", "AIVA_", "ROTEL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(extra)
    return env


@dataclass
class Owned:
    """One subprocess we started: output to log_path, stopped by PID (SIGTERM, then SIGKILL)."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str]
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Spawn in its own session (Ctrl-C reaches only us; we stop it by PID)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(self.env),
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """PID of the running process."""
        if self.proc is None:
            raise BenchError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        """True while started and not yet exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float) -> tuple[int | None, bool]:
        """SIGTERM, wait up to timeout, then SIGKILL; returns (exit code, whether it was killed)."""
        if self.proc is None:
            return None, False
        if self.proc.poll() is not None:
            return self.proc.returncode, False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout), False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(5), True


class Registry:
    """Every process started by this run, so that all of them are stopped on exit or error."""

    def __init__(self) -> None:
        """Nothing owned yet."""
        self._owned: list[Owned] = []

    def start(self, owned: Owned) -> Owned:
        """Start owned and remember it."""
        self._owned.append(owned)
        owned.start()
        return owned

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every remembered process that is still running, newest first."""
        for owned in reversed(self._owned):
            if owned.running:
                log.info("stopping %s (pid %d)", owned.name, owned.pid)
                owned.stop(timeout)
        self._owned.clear()


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll check() until it is true (True) or the deadline passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


# --- rotel -------------------------------------------------------------------------------

# rotel's basic debug log prints one line per received OTLP request, e.g.
#   INFO Received traces. data_type="traces" resource_spans=1 spans=512
RECEIVED = re.compile(r"Received (traces|logs|metrics)\..*?\b(?:spans|logs|metrics)=(\d+)")


@dataclass
class Received:
    """What rotel reported receiving in a window of its output."""

    spans: int = 0
    logs: int = 0
    metrics: int = 0
    requests: int = 0


class Rotel:
    """A private rotel collector: blackhole exporter, basic debug log (per-request counts)."""

    def __init__(self, workdir: Path, registry: Registry) -> None:
        """Pick ports; start() runs it on the load-generator core."""
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.out_path = workdir / "rotel.out"
        argv = [
            "taskset", "-c", LOADGEN_CORE, rotel_binary(), "start",
            "--exporter", "blackhole",
            "--otlp-grpc-endpoint", f"{LOOPBACK}:{self.grpc_port}",
            "--otlp-http-endpoint", f"{LOOPBACK}:{self.http_port}",
            "--debug-log", "traces", "--debug-log", "logs", "--debug-log", "metrics",
            "--debug-log-verbosity", "basic",
            "--pid-file", str(workdir / "rotel.pid"),
            "--log-file", str(workdir / "rotel.log"),
        ]  # fmt: skip
        self._owned = Owned("rotel", argv, self.out_path, clean_env({"NO_COLOR": "1"}))
        self._registry = registry

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint URL for the servers."""
        return f"http://{LOOPBACK}:{self.grpc_port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until both receivers listen."""
        self._registry.start(self._owned)
        ready = wait_until(
            lambda: (
                not self._owned.running
                or (
                    is_listening(LOOPBACK, self.grpc_port)
                    and is_listening(LOOPBACK, self.http_port)
                )
            ),
            timeout,
        )
        if not ready or not self._owned.running:
            raise BenchError(f"rotel did not start: {tail(self.out_path)}")

    def check_alive(self) -> None:
        """Raise when the collector has died."""
        if not self._owned.running:
            raise BenchError(f"rotel exited: {tail(self.out_path)}")

    def mark(self) -> int:
        """Current size of rotel's output: the start of a counting window."""
        try:
            return self.out_path.stat().st_size
        except FileNotFoundError:
            return 0

    def settle(self, quiet: float = 0.5, timeout: float = 5.0) -> None:
        """Wait (bounded) until rotel's output has stopped growing for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        size, since = self.mark(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.mark()
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return

    def received(self, since: int) -> Received:
        """Spans, log records and metrics rotel reported receiving after byte offset since."""
        with self.out_path.open("rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", errors="replace")
        totals = {"traces": 0, "logs": 0, "metrics": 0}
        found = RECEIVED.findall(text)
        for signal_name, number in found:
            totals[signal_name] += int(number)
        return Received(totals["traces"], totals["logs"], totals["metrics"], len(found))


# --- wrk -----------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkResult:
    """The numbers we use from one wrk run."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def _latency_ms(text: str, percentile: str) -> float:
    """A percentile line of wrk's --latency distribution, in milliseconds."""
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percentile}% latency in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Requests, duration, req/s, p50/p99 and error counts from wrk --latency output."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    if total is None or rps is None:
        raise BenchError(f"unexpected wrk output:\n{text}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS[total.group(3)] / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def run_wrk(url: str, seconds: int, connections: int, log_path: Path) -> WrkResult:
    """One wrk run pinned to the load-generator core; its output is appended to log_path."""
    argv = [
        "taskset", "-c", LOADGEN_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--latency", url,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = out.decode("utf-8", errors="replace")
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(argv)}\n{text}\n")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited {proc.returncode}: {text.strip()[-500:]}")
    return parse_wrk(text)


# --- the server under test ----------------------------------------------------------------


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path; returns (status, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants."""
    process = psutil.Process(pid)
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise BenchError(f"no VmHWM for pid {pid}")
    return int(match.group(1)) / 1024.0


def wait_for_route(server: Owned, port: int, path: str, timeout: float) -> int:
    """Wait until the server answers path with 200; returns how many responses it gave.

    Raises BenchError (with the server's last log lines) when it exits, never listens,
    or answers the route with something other than 200 or 503 (still starting).
    """
    if not wait_until(lambda: not server.running or is_listening(LOOPBACK, port), timeout):
        raise BenchError(f"not listening after {timeout:.0f}s: {tail(server.log_path)}")
    deadline = time.monotonic() + timeout
    responses = 0
    while server.running and time.monotonic() < deadline:
        try:
            status, body = http_get(port, path)
        except OSError:
            time.sleep(0.1)
            continue
        responses += 1
        if status == 200:
            return responses
        if status != 503:
            raise BenchError(f"GET {path} answered {status}: {body[:200]!r}")
        time.sleep(0.1)
    if not server.running:
        code = server.proc.returncode if server.proc else None
        raise BenchError(f"{describe_exit(code)}: {tail(server.log_path)}")
    raise BenchError(f"GET {path} not 200 within {timeout:.0f}s: {tail(server.log_path)}")
