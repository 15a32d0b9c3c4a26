"""rotel OTLP collector (PyPI `rotel`) on free loopback ports, dumping what it receives."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import otlp_dump
from .ports import LOOPBACK, free_port, is_listening
from .processes import ManagedProcess
from .wait import wait_for

INSTALL_HINT = "pip install rotel (test dependency; provides site-packages/rotel/rotel-agent)"
Record = dict[str, Any]


def rotel_binary() -> str:
    """rotel-agent inside the installed rotel package ('rotel-agent' when not installed)."""
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        return "rotel-agent"
    return str(Path(next(iter(spec.submodule_search_locations))) / "rotel-agent")


def _clean_env() -> dict[str, str]:
    """Our environment without ROTEL_* settings (they would override flags), plus NO_COLOR=1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
    env["NO_COLOR"] = "1"
    return env


class Rotel:
    """Private rotel: OTLP gRPC + HTTP receivers, blackhole exporter, detailed dump to dump_path."""

    def __init__(self, binary: str, workdir: Path, host: str = LOOPBACK) -> None:
        """Pick the ports now; nothing runs until start()."""
        self.host = host
        self.grpc_port = free_port(host)
        self.http_port = free_port(host)
        self.workdir = workdir
        self.dump_path = workdir / "rotel.out"
        self._process = ManagedProcess(
            argv=self._argv(binary),
            log_path=self.dump_path,
            env=_clean_env(),
            cwd=workdir,
            name="rotel",
        )

    def _argv(self, binary: str) -> list[str]:
        """argv: blackhole exporter, both receivers, detailed debug log of all three signals."""
        return [
            binary,
            "start",
            "--exporter",
            "blackhole",
            "--otlp-grpc-endpoint",
            f"{self.host}:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"{self.host}:{self.http_port}",
            "--debug-log",
            "traces",
            "--debug-log",
            "metrics",
            "--debug-log",
            "logs",
            "--debug-log-verbosity",
            "detailed",
            "--pid-file",
            str(self.workdir / "rotel.pid"),
            "--log-file",
            str(self.workdir / "rotel.log"),
        ]

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint URL, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP base URL (append /v1/traces, /v1/metrics, /v1/logs)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """PID of the current run."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the collector process is alive."""
        return self._process.running

    def _ready(self) -> bool:
        """Both receivers accept TCP connections."""
        return is_listening(self.host, self.grpc_port) and is_listening(self.host, self.http_port)

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again, on the same ports) and wait until both receivers listen."""
        self._process.start(self._ready, timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM by PID (SIGKILL after timeout); returns the exit code. The dump file is kept."""
        return self._process.stop(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """stop() then start() on the same ports; the dump file keeps both runs."""
        self.stop()
        self.start(timeout)

    def mark(self) -> int:
        """Current size of the dump; pass as since= to only look at what arrives afterwards."""
        try:
            return self.dump_path.stat().st_size
        except FileNotFoundError:
            return 0

    def output(self, since: int = 0) -> str:
        """The dump text (rotel's own log lines included), from byte offset since."""
        try:
            with self.dump_path.open("rb") as fh:
                fh.seek(since)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def spans(self, since: int = 0) -> list[Record]:
        """Spans received, as dicts.

        Keys: trace_id, span_id, parent_id ('' for a root), name, kind ('SERVER'...), status
        ('UNSET'/'OK'/'ERROR'), status_message, start_time, end_time, attributes, events, links,
        scope, resource.
        """
        return otlp_dump.parse_spans(self.output(since))

    def log_records(self, since: int = 0) -> list[Record]:
        """Log records received, as dicts.

        Keys: body, severity ('WARN'...), severity_number, severity_text, event_name, trace_id and
        span_id ('' when none), timestamp, attributes, scope, resource.
        """
        return otlp_dump.parse_log_records(self.output(since))

    def metrics(self, since: int = 0) -> list[Record]:
        """Metrics received (one per metric per export): name, type, unit, description,
        monotonic, points, point_attributes, scope, resource."""
        return otlp_dump.parse_metrics(self.output(since))

    def metric_names(self, since: int = 0) -> set[str]:
        """Names of all metrics received."""
        return {m["name"] for m in self.metrics(since)}

    def _summary(self, since: int) -> str:
        """What arrived so far (for timeout messages)."""
        spans = sorted({s["name"] for s in self.spans(since)})
        logs = [str(r["body"])[:60] for r in self.log_records(since)][-10:]
        return f"spans={spans} logs(last 10)={logs} metrics={sorted(self.metric_names(since))}"

    def wait_for(
        self, predicate: Callable[[Rotel], Any], timeout: float = 10.0, since: int = 0
    ) -> Any:
        """Poll predicate(self) until truthy (returned); else WaitTimeout saying what arrived."""
        return wait_for(
            lambda: predicate(self), timeout, interval=0.1, message=lambda: self._summary(since)
        )

    def wait_for_spans(
        self, match: Callable[[Record], bool], count: int = 1, timeout: float = 10.0, since: int = 0
    ) -> list[Record]:
        """Wait until at least count spans satisfy match; returns all matching spans."""
        return self._wait_records(self.spans, match, count, timeout, since)

    def wait_for_log_records(
        self, match: Callable[[Record], bool], count: int = 1, timeout: float = 10.0, since: int = 0
    ) -> list[Record]:
        """Wait until at least count log records satisfy match; returns all matching records."""
        return self._wait_records(self.log_records, match, count, timeout, since)

    def wait_for_metric(self, name: str, timeout: float = 10.0, since: int = 0) -> list[Record]:
        """Wait until a metric called name arrives; returns its entries."""
        return self._wait_records(self.metrics, lambda m: m["name"] == name, 1, timeout, since)

    def _wait_records(
        self,
        source: Callable[[int], list[Record]],
        match: Callable[[Record], bool],
        count: int,
        timeout: float,
        since: int,
    ) -> list[Record]:
        """Shared polling for the wait_for_* helpers."""

        def found() -> list[Record]:
            hits = [r for r in source(since) if match(r)]
            return hits if len(hits) >= count else []

        return wait_for(found, timeout, interval=0.1, message=lambda: self._summary(since))
