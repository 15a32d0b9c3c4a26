"""Overhead benchmark: bare Starlette vs aiva and stock OpenTelemetry, under wrk, into rotel;
and, against their own baselines, FastAPI under aiva.instrument, an httpx client span and
the work route (a handler with telemetry of its own) against itself without telemetry."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import protections_inprocess
from comparisons import CLIENT_SPAN, SECTION_CONFIGS, checks, tables
from configs import (
    BREAKDOWN,
    BY_NAME,
    CONFIGS,
    PROTECTIONS,
    WORK_BREAKDOWN,
    BenchConfig,
    with_baselines,
)
from harness import (
    LOOPBACK,
    SERVER_CORE,
    BenchError,
    Owned,
    Registry,
    Rotel,
    clean_env,
    cpu_seconds,
    describe_exit,
    free_port,
    http_get,
    log,
    peak_rss_mib,
    run_wrk,
    tail,
    wait_for_route,
)
from report import BARE, RunResult, Summary, failures, last_line, summarize, table, targets
from serve_switched import SWITCHES_VARIABLE
from upstream import Upstream

BENCH_DIR = Path(__file__).resolve().parent
METRICS_PATH = "/metrics"
START_TIMEOUT_S = 60.0
# aiva finishes in-flight requests (graceful_timeout_s 10) and then flushes (OTLP timeout 10).
STOP_TIMEOUT_S = 45.0
RUN_OVERHEAD_S = 2.5  # start-up, probes, shutdown and collector settling, for the estimate
UPSTREAM_VARIABLE = "BENCH_UPSTREAM_URL"  # read by apps.upstream_call


@dataclass
class Context:
    """What every run needs: options, the collector, the process registry, the work folder."""

    opts: argparse.Namespace
    rotel: Rotel
    registry: Registry
    workdir: Path
    aiva_config_dir: Path
    upstream: Upstream | None = None  # started when a configuration calls it


# --- one run -----------------------------------------------------------------------------------


def server_argv(config: BenchConfig, port: int) -> list[str]:
    """The server command, pinned to the server core."""
    pin = ["taskset", "-c", SERVER_CORE, sys.executable]
    if config.factory is None:
        target = [f"apps:{config.serves}", "--factory"] if config.serves else []
        # Benchmark-only switches: the same command through serve_switched.py.
        command = [str(BENCH_DIR / "serve_switched.py")] if config.switches else ["-m", "aiva"]
        return [*pin, *command, "serve", *target, "--host", LOOPBACK, "--port", str(port)]
    return [
        *pin, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "--factory", f"apps:{config.factory}",
        "--host", LOOPBACK, "--port", str(port), "--workers", "1",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def server_env(config: BenchConfig, ctx: Context) -> dict[str, str]:
    """Environment of the server: only the configuration's variables on a clean base."""
    if config.factory is None:
        extra = {
            "AIVA_CONFIG_DIR": str(ctx.aiva_config_dir),
            "AIVA_TELEMETRY__OTLP__ENDPOINT": ctx.rotel.grpc_endpoint,
            **config.env,
        }
        if config.serves:  # `aiva serve apps:...` imports benchmarks/apps.py
            extra["PYTHONPATH"] = str(BENCH_DIR)
        if config.switches:
            extra[SWITCHES_VARIABLE] = ",".join(config.switches)
    else:
        extra = {
            "OTEL_SERVICE_NAME": f"bench-{config.name}",
            "OTEL_EXPORTER_OTLP_ENDPOINT": ctx.rotel.grpc_endpoint,
            **config.env,
        }
    if config.upstream:
        if ctx.upstream is None:
            raise BenchError(f"{config.name} needs the upstream, which was not started")
        extra[UPSTREAM_VARIABLE] = ctx.upstream.url
    return clean_env(extra)


def count_series(port: int) -> int:
    """Number of sample lines in the server's Prometheus exposition (0 when unavailable)."""
    try:
        status, body = http_get(port, METRICS_PATH)
    except OSError:
        return 0
    if status != 200:
        return 0
    lines = body.decode("utf-8", errors="replace").splitlines()
    return sum(1 for line in lines if line and not line.startswith("#"))


def measure(config: BenchConfig, server: Owned, port: int, result: RunResult, ctx: Context) -> None:
    """Warm up, then the measured wrk run with CPU time around it; fills result."""
    url = f"http://{LOOPBACK}:{port}{config.route}"
    wrk_log = ctx.workdir / "wrk.log"
    connections = config.connections or ctx.opts.connections
    warm = run_wrk(url, ctx.opts.warmup, connections, wrk_log)
    result.warmup_requests = warm.requests
    try:
        cpu_before = cpu_seconds(server.pid)
        measured = run_wrk(url, ctx.opts.duration, connections, wrk_log)
        cpu_after = cpu_seconds(server.pid)
        result.peak_rss_mib = peak_rss_mib(server.pid)
    except (psutil.Error, OSError) as exc:
        raise BenchError(f"server gone during the run: {exc}") from exc
    result.requests, result.seconds, result.rps = measured.requests, measured.seconds, measured.rps
    result.p50_ms, result.p99_ms = measured.p50_ms, measured.p99_ms
    result.cpu_s = cpu_after - cpu_before
    result.cpu_us_per_req = result.cpu_s * 1e6 / max(1, measured.requests)
    if config.prometheus:
        result.prom_series = count_series(port)
    bad = warm.non_2xx + measured.non_2xx
    if bad or measured.socket_errors:
        raise BenchError(f"{bad} non-2xx responses, {measured.socket_errors} socket errors")


def stop_server(server: Owned, result: RunResult) -> None:
    """SIGTERM and wait for the server's own shutdown (its telemetry flush)."""
    started = time.monotonic()
    result.exit_code, result.killed = server.stop(STOP_TIMEOUT_S)
    result.stop_s = time.monotonic() - started
    if result.killed:
        log.warning("%s did not exit within %.0fs of SIGTERM: killed", server.name, STOP_TIMEOUT_S)


def collect(config: BenchConfig, result: RunResult, ctx: Context, mark: int) -> None:
    """What the collector received in this run's window, and what the server sent."""
    ctx.rotel.settle()
    ctx.rotel.check_alive()
    if config.upstream and ctx.upstream is not None:
        ctx.upstream.check_alive()
    received = ctx.rotel.received(mark)
    result.spans_received, result.logs_received = received.spans, received.logs
    result.metric_exports_received = received.metrics
    served = result.probe_requests + result.warmup_requests + result.requests
    result.spans_sent = served * config.spans_per_request * config.sampler_ratio
    result.logs_sent = served * config.logs_per_request


def run_one(config: BenchConfig, round_no: int, ctx: Context) -> RunResult:
    """Start the server, load it, stop it, count what reached the collector."""
    result = RunResult(config=config.name, round=round_no)
    port = free_port()
    log_path = ctx.workdir / f"{config.name}-r{round_no}.log"
    server = Owned(config.name, server_argv(config, port), log_path, server_env(config, ctx))
    mark = ctx.rotel.mark()
    ctx.registry.start(server)
    try:
        result.probe_requests = wait_for_route(server, port, config.route, START_TIMEOUT_S)
    except BenchError as exc:
        result.error, result.failed_start = f"failed to start: {exc}", True
        stop_server(server, result)
        return result
    try:
        measure(config, server, port, result, ctx)
    except BenchError as exc:
        result.error = str(exc)
        if not server.running:
            code = server.proc.returncode if server.proc else None
            result.error += f"; the server {describe_exit(code)}: {tail(server.log_path)}"
    finally:
        stop_server(server, result)
    collect(config, result, ctx, mark)
    return result


# --- the whole benchmark -------------------------------------------------------------------------


def _progress(result: RunResult, rounds: int) -> None:
    """One log line per run."""
    if result.error:
        log.warning("round %d/%d %s: %s", result.round, rounds, result.config, result.error)
        return
    log.info(
        "round %d/%d %-17s %7.0f req/s  p99 %6.2f ms  %5.0f CPU us/req  spans %d/%d  logs %d/%d",
        result.round, rounds, result.config, result.rps, result.p99_ms, result.cpu_us_per_req,
        round(result.spans_sent), result.spans_received, round(result.logs_sent),
        result.logs_received,
    )  # fmt: skip


def round_order(
    configs: Sequence[BenchConfig], round_no: int, alternate: bool
) -> list[BenchConfig]:
    """The order of one round: the catalogue's, or with `alternate` the reverse of it on
    even rounds (bare still first), so that no configuration always runs right after
    the same one."""
    if not alternate or round_no % 2:
        return list(configs)
    return [c for c in configs if c.name == BARE] + [c for c in reversed(configs) if c.name != BARE]


def run_rounds(configs: Sequence[BenchConfig], ctx: Context) -> list[RunResult]:
    """Interleaved rounds: each round runs every configuration once, in order."""
    results: list[RunResult] = []
    broken: set[str] = set()
    for round_no in range(1, ctx.opts.rounds + 1):
        for config in round_order(configs, round_no, ctx.opts.alternate):
            if config.name in broken:
                continue
            result = run_one(config, round_no, ctx)
            _progress(result, ctx.opts.rounds)
            results.append(result)
            if result.failed_start:
                if config.name == BARE:
                    raise BenchError(f"the baseline failed: {result.error}")
                broken.add(config.name)
    return results


def summaries(configs: Sequence[BenchConfig], results: Sequence[RunResult]) -> list[Summary]:
    """One Summary per configuration, against its baseline (bare, unless it names another)."""

    def runs(name: str) -> list[RunResult]:
        return [r for r in results if r.config == name]

    return [
        summarize(c.name, c.description, c.sampler_ratio, runs(c.name), runs(c.baseline))
        for c in configs
    ]


def report(
    configs: Sequence[BenchConfig],
    sums: Sequence[Summary],
    results: Sequence[RunResult],
    opts: argparse.Namespace,
    span_check: str | None = None,
) -> None:
    """Print the table, failures, targets, the pairs with their own baselines and their
    checks (`span_check`: the in-process client span check's line), and, last, the full
    pipeline's ratio."""
    signals = {c.name: (c.spans_per_request > 0, c.logs_per_request > 0) for c in configs}
    by_name = {s.config: s for s in sums}
    print(
        f"overhead: {opts.rounds} round(s) x {opts.duration}s (+{opts.warmup}s warm-up), "
        f"wrk -t1 -c{opts.connections} on core 1, server on core 0; medians over rounds; "
        "x bare = median of same-round ratios"
    )
    print("\n".join(table([s for s in sums if s.config not in SECTION_CONFIGS], signals)))
    for line in failures(sums):
        print(line)
    for line in targets(by_name):
        print(line)
    paired = tables(by_name, {c.name: c.baseline for c in configs}, signals)
    if paired:
        print("\n".join(paired))
        print("\n".join(checks(results, by_name, span_check)))
    print(last_line(by_name))


def write_json(
    path: Path, opts: argparse.Namespace, results: Sequence[RunResult], sums: Sequence[Summary]
) -> None:
    """The raw runs, the summaries and the run's settings as JSON."""
    payload: dict[str, Any] = {
        "settings": {
            **{k: v for k, v in vars(opts).items() if k not in ("json", "configs")},
            "configs": [c.name for c in opts.configs],
        },
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "configs": {
            c.name: dataclasses.asdict(c) for c in CONFIGS if c.name in {s.config for s in sums}
        },
        "runs": [dataclasses.asdict(r) for r in results],
        "summaries": [dataclasses.asdict(s) for s in sums],
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


# --- command line --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Options; --quick is 1 round of 2 s."""
    parser = argparse.ArgumentParser(
        prog="benchmarks/overhead",
        description=__doc__,
        epilog="configurations: " + ", ".join(c.name for c in CONFIGS),
    )
    parser.add_argument(
        "--only",
        help="comma-separated configurations (bare and the baselines they need are added)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="aiva_full_01 one layer at a time: " + ", ".join(BREAKDOWN),
    )
    parser.add_argument(
        "--breakdown-work",
        action="store_true",
        help="the work route (GET /api/demo/work) one signal at a time, telemetry off to "
        "aiva_full's settings: " + ", ".join(WORK_BREAKDOWN),
    )
    parser.add_argument(
        "--protections",
        action="store_true",
        help="issue #12's protections one at a time (configs.py says on what), with the 3 us "
        "target: " + ", ".join(PROTECTIONS),
    )
    parser.add_argument(
        "--alternate",
        action="store_true",
        help="reverse the order of the configurations on even rounds (--protections does)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--duration", type=int, default=5, help="measured seconds per run (default 5)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds per run (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 2 s")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep server, wrk and rotel logs"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.rounds, opts.duration = 1, 2
    if min(opts.rounds, opts.duration, opts.warmup, opts.connections) < 1:
        parser.error("--rounds, --duration, --warmup and --connections must be at least 1")
    flags = ("only", "breakdown", "breakdown_work", "protections")
    if sum(1 for flag in flags if getattr(opts, flag)) > 1:
        parser.error(
            "--only, --breakdown, --breakdown-work and --protections choose configurations: "
            "give one"
        )
    if opts.breakdown:
        opts.only = ",".join(BREAKDOWN)
    if opts.breakdown_work:
        opts.only = ",".join(WORK_BREAKDOWN)
    if opts.protections:
        # Differences of a few µs: no layer may always follow the same neighbour.
        opts.only, opts.alternate = ",".join(PROTECTIONS), True
    opts.configs = select(parser, opts.only)
    return opts


def select(parser: argparse.ArgumentParser, only: str | None) -> list[BenchConfig]:
    """The chosen configurations and the baselines they need, in catalogue order, bare first."""
    if not only:
        return [c for c in CONFIGS if c.default]
    names = {n.strip() for n in only.split(",") if n.strip()}
    unknown = sorted(names - BY_NAME.keys())
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return with_baselines([BY_NAME[n] for n in names])


def check_tools() -> None:
    """wrk and taskset on PATH, two cores to pin to."""
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} not found on PATH (apt-get install -y {tool})")
    if len(os.sched_getaffinity(0)) < 2:
        raise BenchError("needs at least 2 cores (server on core 0, wrk and rotel on core 1)")


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: unwind like Ctrl-C, so that every started process is stopped."""
    raise KeyboardInterrupt


def execute(opts: argparse.Namespace, workdir: Path) -> int:
    """Start rotel, run the rounds, report; stops every process it started."""
    registry = Registry()
    try:
        rotel = Rotel(workdir, registry)
        rotel.start()
        config_dir = workdir / "aiva-config"  # empty: aiva runs on package defaults + variables
        config_dir.mkdir()
        ctx = Context(opts, rotel, registry, workdir, config_dir)
        if any(c.upstream for c in opts.configs):
            ctx.upstream = Upstream(workdir, registry)
            ctx.upstream.start()
        results = run_rounds(opts.configs, ctx)
    finally:
        registry.stop_all()
    sums = summaries(opts.configs, results)
    if opts.json:
        write_json(opts.json, opts, results, sums)
    ran = {r.config for r in results if r.ok}
    # Under wrk the httpx pair's rounds differ by more than a client span costs: the
    # check's verdict is the in-process measurement, on the quiet machine after the rounds.
    span_check = span_check_inprocess(opts.rounds) if ran.issuperset(CLIENT_SPAN) else None
    report(opts.configs, sums, results, opts, span_check)
    if opts.protections:  # the wrk rounds cannot resolve 3 µs: each part alone as well
        protections_inprocess.report()
    return 0


def span_check_inprocess(rounds: int) -> str | None:
    """The client span check measured in-process after the wrk rounds: the last line of
    `instrument_inprocess.py --spans-only`, pinned to the server's core (None when it
    failed, logged with the end of its output: the wrk pair's verdict stands then)."""
    command = [
        "taskset", "-c", SERVER_CORE, sys.executable, str(BENCH_DIR / "instrument_inprocess.py"),
        "--spans-only", "--rounds", str(max(rounds, 5)),
    ]  # fmt: skip
    log.info("the client span check in-process: %s", " ".join(command[3:]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        log.warning("instrument_inprocess.py --spans-only did not finish in 900 s")
        return None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log.warning(
            "instrument_inprocess.py --spans-only failed (exit %d): %s",
            done.returncode, done.stderr.strip()[-2000:],
        )  # fmt: skip
        return None
    return lines[-1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 after a report, 1 on a benchmark error, 130 when interrupted."""
    opts = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, _terminate)
    estimate = opts.rounds * len(opts.configs) * (opts.warmup + opts.duration + RUN_OVERHEAD_S)
    log.info("%d configuration(s), about %.0f s", len(opts.configs), estimate)
    workdir = Path(tempfile.mkdtemp(prefix="aiva-overhead-"))
    try:
        check_tools()
        return execute(opts, workdir)
    except BenchError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; every started process was stopped")
        return 130
    finally:
        if opts.keep_workdir:
            log.info("logs kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
