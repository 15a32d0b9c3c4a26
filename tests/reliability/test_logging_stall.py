"""Logging never blocks serving, and no log line grows with what a client sends.

Issue #12: the console handler wrote on the event loop, so once nobody read the 64 KiB
pipe behind stderr every request, `/livez` included, hung until someone did; and a 10 MB
`baggage` header produced a 10 MB warning line (OpenTelemetry's propagator echoes it).
Here `aiva serve` runs with its stderr on a pipe that nobody reads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from aiva.telemetry.log_bounds import MAX_TEXT_CHARS
from infra.ports import LOOPBACK, free_port
from infra.service import AivaService, answers, service_env
from infra.wait import wait_for

# /api/demo/work logs five INFO lines (about 1.7 KiB): the 64 KiB pipe is full after
# about 40 requests, the console's queue (4,096 records) after about 850 more.
REQUESTS = 1500
PIPE_BYTES = 64 * 1024
EXIT_BOUND_S = 10 + 2.0  # server.graceful_timeout_s (default) + the documented margin
ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", "AIVA_TELEMETRY__LOGS__LEVEL": "INFO"}


@contextmanager
def unread_stderr(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`aiva serve` with its stderr (where the console logs go) on a pipe nobody reads;
    yields the process and its base URL; killed with its group at the end."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    port = free_port()
    argv = [sys.executable, "-m", "aiva", "serve", "--host", LOOPBACK, "--port", str(port)]
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=service_env(ENV, config_dir),
        cwd=tmp_path,
        start_new_session=True,
    )
    base_url = f"http://{LOOPBACK}:{port}"
    try:
        wait_for(
            lambda: process.poll() is not None or answers(base_url + "/"),
            timeout=30,
            message="aiva serve did not answer",
        )
        assert process.poll() is None, f"aiva serve exited with {process.returncode}"
        yield process, base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def fill_the_pipe(base_url: str) -> None:
    """REQUESTS requests logging about 2.5 MiB in all; each must be answered within 2 s."""
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        for index in range(REQUESTS):
            try:
                answer = client.get("/api/demo/work")
            except httpx.TimeoutException:
                pytest.fail(f"request {index} hung: logging blocks serving")
            assert answer.status_code == 200


def answered_within_a_second(base_url: str, path: str) -> float:
    started = time.monotonic()
    try:
        answer = httpx.get(base_url + path, timeout=1.0)
    except httpx.TimeoutException:
        pytest.fail(f"{path} did not answer within 1 s")
    took = time.monotonic() - started
    assert answer.status_code == 200, (path, answer.status_code)
    assert took < 1.0, (path, took)
    return took


def console_drops(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics", timeout=1.0).text
    match = re.search(r'^aiva_logs_dropped_total\{[^}]*output="console"[^}]*\} (\S+)$', text, re.M)
    assert match, "aiva_logs_dropped_total{output=console} missing"
    return float(match.group(1))


def test_a_stalled_log_reader_does_not_stop_the_service(tmp_path: Path) -> None:
    with unread_stderr(tmp_path) as (process, base_url):
        assert console_drops(base_url) == 0  # there from start-up
        fill_the_pipe(base_url)
        livez = answered_within_a_second(base_url, "/livez")
        route = answered_within_a_second(base_url, "/api/demo/items/1")
        print(f"stalled stderr: /livez {livez * 1000:.0f} ms, a route {route * 1000:.0f} ms")
        assert console_drops(base_url) > 0
        # And it still exits, on time, while nobody reads.
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_BOUND_S} s after SIGTERM with stderr stalled")
        assert code == 0
        print(f"stalled stderr: SIGTERM to exit {time.monotonic() - started:.1f} s")


def test_drops_are_said_once_the_reader_is_back(tmp_path: Path) -> None:
    with unread_stderr(tmp_path) as (process, base_url):
        fill_the_pipe(base_url)
        dropped = console_drops(base_url)
        assert dropped > 0
        read = bytearray()
        assert process.stderr is not None
        stream = process.stderr

        def read_all() -> None:  # until the process is killed at the end
            while chunk := stream.read1():
                read.extend(chunk)

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()  # the reader is back
        line = wait_for(
            lambda: re.search(rb"(\d+) log records were dropped on the console", read),
            timeout=15,
            message="no line about the dropped records",
        )
        assert int(line.group(1)) >= dropped
        assert len(read) > PIPE_BYTES
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=EXIT_BOUND_S) == 0
        reader.join(timeout=5)


def test_a_10_mb_baggage_header_makes_no_long_log_line(
    aiva_service: Callable[..., AivaService],
) -> None:
    # The request-head limit (server.limits.max_header_bytes) would refuse the header
    # before the propagator sees it: raised here, so that the log line is what is tested.
    service = aiva_service(
        env={**ENV, "AIVA_SERVER__LIMITS__MAX_HEADER_BYTES": str(32 * 1024 * 1024)}
    )
    baggage = "k=" + "v" * (10 * 1024 * 1024)
    with service.client(timeout=30) as client:
        assert client.get("/api/demo/items/1", headers={"baggage": baggage}).status_code == 200
    # OpenTelemetry's warning echoes the header: its message is cut, and says so.
    warning = wait_for(
        lambda: re.search(r"Baggage header `k=v+… \[cut: (\d+) characters", service.log_text()),
        timeout=5,
        message="no cut warning about the baggage header",
    )
    assert int(warning.group(1)) > len(baggage)
    log = service.log_text()
    longest = max(len(line) for line in log.splitlines())
    print(f"10 MB baggage: log {len(log)} characters, longest line {longest}")
    assert longest < MAX_TEXT_CHARS + 1024, longest
