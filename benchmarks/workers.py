"""`aiva serve --workers N` under wrk (issue #13): requests per second with 1 and 2
workers, the CPU per request the cross-worker `/metrics` mechanism and exemplars add,
and `/metrics` scrape latency with 1 and 2 workers; in one run.

1. Rounds of three `aiva serve` runs (reference app, `GET /api/demo/items/42`; traces at
   ratio 1.0, so every request is sampled; Prometheus on; OTLP to a private rotel, as
   benchmarks/overhead's `aiva_traces_prom`): 1 worker with `exemplar_filter:
   trace_based` (the default), 1 worker with `always_off`, 2 workers (trace_based); the
   order reverses on even rounds. Each run: a warm-up and a measured `wrk -t1 -c16` on
   core 1 (harness.run_wrk), CPU time of the whole process tree (parent and workers,
   psutil) around it, idle CPU for `--idle` seconds (5), then `--scrapes` scrapes of
   `/metrics` as Prometheus asks (OpenMetrics, gzip), each on a fresh connection. The
   server is not pinned: its workers may use both cores, which wrk and rotel share.
2. The cross-worker mechanism measured directly, in child processes on core 0, each
   building the reference app's telemetry as a worker would (the shared folder in the
   environment variable `aiva serve` sets) and serving requests over ASGI: the CPU of
   one snapshot (the snapshot thread's tick, once a second per worker), divided by the
   per-worker request rate of (1); and the CPU of one scrape with the other worker's
   snapshot to merge (a second, live child) against the same scrape with one worker.
   Target: at most 5 µs a request.
3. Exemplars: the same-round difference of CPU µs per request between trace_based and
   always_off with 1 worker (median over rounds); benchmarks/exemplars_inprocess.py's
   in-process figure (their own code); and the whole reference app called over ASGI on
   core 0 with each filter, in interleaved rounds. Target: at most 3 µs a request.
   A difference gets a verdict only when its rounds agree within twice the target.

Run: `python benchmarks/workers [--rounds 5] [--duration 5]` (about 6 min by default).
Progress on stderr, the report on stdout; exit 0 after a report, 1 on a benchmark error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import gzip
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOOPBACK,
    SERVER_CORE,
    BenchError,
    Owned,
    Registry,
    Rotel,
    clean_env,
    cpu_seconds,
    free_port,
    log,
    run_wrk,
    wait_until,
)
from harness import wait_for_route as _wait_for_route

BENCH_DIR = Path(__file__).resolve().parent
ROUTE_PATH = "/api/demo/items/42"
METRICS_PATH = "/metrics"
# What Prometheus (2.x) sends when it scrapes: OpenMetrics first, and always gzip.
SCRAPE_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
METRICS_DIR_VARIABLE = "_AIVA_WORKER_METRICS_DIR"  # aiva.server.METRICS_DIR_VARIABLE
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 45.0
EXEMPLAR_TARGET_US = 3.0
SHARE_TARGET_US = 5.0
INPROCESS_REQUESTS = 5000
# As benchmarks/configs.py's aiva_traces_prom (OTLP endpoint and config dir added per run).
AIVA_ENV = {
    "AIVA_TELEMETRY__ENABLED": "true",
    "AIVA_TELEMETRY__TRACES__ENABLED": "true",
    "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "1.0",
    "AIVA_TELEMETRY__METRICS__ENABLED": "true",
    "AIVA_TELEMETRY__METRICS__PROMETHEUS__ENABLED": "true",
    "AIVA_TELEMETRY__LOGS__OTLP": "false",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",
    "AIVA_TELEMETRY__INSTRUMENTATION": "aiva",
}
FILTER_VARIABLE = "AIVA_TELEMETRY__METRICS__EXEMPLAR_FILTER"


@dataclass(frozen=True)
class Variant:
    """One server configuration of a round."""

    name: str
    workers: int
    exemplar_filter: str


ONE = Variant("1 worker", 1, "trace_based")
ONE_OFF = Variant("1 worker, exemplars off", 1, "always_off")
TWO = Variant("2 workers", 2, "trace_based")
VARIANTS = (ONE, ONE_OFF, TWO)


@dataclass
class Run:
    """One server process in one round."""

    variant: Variant
    round: int
    rps: float = 0.0
    requests: int = 0
    cpu_us_per_req: float = 0.0
    p99_ms: float = 0.0
    idle_cpu_ms_per_s: float = 0.0
    scrape_ms: list[float] = field(default_factory=list)
    scrape_bytes: int = 0
    error: str | None = None


# --- one server run -----------------------------------------------------------------------


def server_env(variant: Variant, rotel: Rotel, config_dir: Path) -> dict[str, str]:
    """The server's environment: the configuration's variables on a clean base."""
    return clean_env(
        {
            "AIVA_CONFIG_DIR": str(config_dir),
            "AIVA_TELEMETRY__OTLP__ENDPOINT": rotel.grpc_endpoint,
            **AIVA_ENV,
            FILTER_VARIABLE: variant.exemplar_filter,
        }
    )


def answering_pid(port: int) -> int | None:
    """The pid of the worker that answers GET /info on a fresh connection."""
    try:
        status, body = get(port, "/info", {})
    except OSError:
        return None
    if status != 200:
        return None
    return int(json.loads(body)["runtime"]["pid"])


def wait_for_workers(server: Owned, port: int, workers: int) -> None:
    """Wait until `workers` distinct workers have answered (fresh connections spread them)."""
    seen: set[int] = set()

    def all_seen() -> bool:
        pid = answering_pid(port)
        if pid is not None:
            seen.add(pid)
        return len(seen) >= workers or not server.running

    if not wait_until(all_seen, START_TIMEOUT_S, interval=0.02) or not server.running:
        raise BenchError(f"only {len(seen)} of {workers} workers answered")


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """GET on a fresh connection (so that any worker may answer); returns (status, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status == 200 and path == METRICS_PATH:
            if response.getheader("Content-Encoding") != "gzip":
                raise BenchError("/metrics did not answer gzip to Accept-Encoding: gzip")
            body = gzip.decompress(body)
        return response.status, body
    finally:
        conn.close()


def scrape_latencies(port: int, count: int) -> tuple[list[float], int]:
    """Milliseconds of `count` scrapes, each on a fresh connection; the last body's size."""
    timings, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        status, body = get(port, METRICS_PATH, SCRAPE_HEADERS)
        timings.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        size = len(body)
        time.sleep(0.02)
    return timings, size


def run_one(variant: Variant, round_no: int, ctx: Context) -> Run:
    """Start the server, load it, measure idle CPU and scrapes, stop it."""
    run = Run(variant, round_no)
    port = free_port()
    argv = [
        sys.executable, "-m", "aiva", "serve", "--host", LOOPBACK, "--port", str(port),
        "--workers", str(variant.workers),
    ]  # fmt: skip
    log_path = ctx.workdir / f"w{variant.workers}-{variant.exemplar_filter}-r{round_no}.log"
    server = Owned(variant.name, argv, log_path, server_env(variant, ctx.rotel, ctx.config_dir))
    ctx.registry.start(server)
    url = f"http://{LOOPBACK}:{port}{ROUTE_PATH}"
    wrk_log = ctx.workdir / "wrk.log"
    try:
        _wait_for_route(server, port, ROUTE_PATH, START_TIMEOUT_S)
        wait_for_workers(server, port, variant.workers)
        run_wrk(url, ctx.opts.warmup, ctx.opts.connections, wrk_log)
        before = cpu_seconds(server.pid)
        measured = run_wrk(url, ctx.opts.duration, ctx.opts.connections, wrk_log)
        after = cpu_seconds(server.pid)
        if measured.non_2xx or measured.socket_errors:
            raise BenchError(f"{measured.non_2xx} non-2xx, {measured.socket_errors} socket errors")
        run.rps, run.requests, run.p99_ms = measured.rps, measured.requests, measured.p99_ms
        run.cpu_us_per_req = (after - before) * 1e6 / max(1, measured.requests)
        time.sleep(0.5)  # the requests still in flight when wrk stopped
        before = cpu_seconds(server.pid)
        time.sleep(ctx.opts.idle)
        run.idle_cpu_ms_per_s = (cpu_seconds(server.pid) - before) * 1000 / ctx.opts.idle
        run.scrape_ms, run.scrape_bytes = scrape_latencies(port, ctx.opts.scrapes)
    except (BenchError, psutil.Error, OSError) as exc:
        run.error = str(exc)
    finally:
        code, killed = server.stop(STOP_TIMEOUT_S)
        if (code != 0 or killed) and run.error is None:
            run.error = f"exit code {code}{' (killed)' if killed else ''}"
    return run


@dataclass
class Context:
    """Options, the collector, the process registry, the work folder."""

    opts: argparse.Namespace
    rotel: Rotel
    registry: Registry
    workdir: Path
    config_dir: Path


def run_rounds(ctx: Context) -> list[Run]:
    """Interleaved rounds, the order reversed on even rounds."""
    runs: list[Run] = []
    for round_no in range(1, ctx.opts.rounds + 1):
        order = VARIANTS if round_no % 2 else tuple(reversed(VARIANTS))
        for variant in order:
            run = run_one(variant, round_no, ctx)
            runs.append(run)
            if run.error:
                log.warning("round %d %s: %s", round_no, variant.name, run.error)
            else:
                log.info(
                    "round %d/%d %-24s %7.0f req/s %6.1f CPU us/req  idle %5.1f CPU ms/s  "
                    "scrape median %.1f ms",
                    round_no, ctx.opts.rounds, variant.name, run.rps, run.cpu_us_per_req,
                    run.idle_cpu_ms_per_s, statistics.median(run.scrape_ms),
                )  # fmt: skip
            ctx.rotel.check_alive()
    return runs


# --- the mechanism measured in-process (child processes) --------------------------------


def _probe_main(mode: str, directory: str, count: int) -> None:
    """A child: build the reference app's telemetry as a worker would, serve requests
    over ASGI, then measure (mode `share` or `plain`) or keep its snapshot fresh until
    stdin closes (mode `other`: the second worker). Prints one JSON line."""
    env = {
        **AIVA_ENV,
        FILTER_VARIABLE: "trace_based",
        "AIVA_CONFIG_DIR": directory + "/config",
        "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",  # the machine's load: not measured
    }
    Path(env["AIVA_CONFIG_DIR"]).mkdir(exist_ok=True)
    if mode != "plain":
        env[METRICS_DIR_VARIABLE] = directory + "/share"
    os.environ.update(env)
    from aiva.settings import load_settings
    from aiva.web.app import create_reference_app

    if mode == "exemplars":
        print(json.dumps(_exemplar_pairs(env, count)), flush=True)
        return
    settings = load_settings(env, config_dir=env["AIVA_CONFIG_DIR"]).settings
    result = asyncio.run(_probe(create_reference_app(settings), mode, count))
    print(json.dumps(result), flush=True)


def _exemplar_pairs(env: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """CPU µs per request of the whole reference app over ASGI, trace_based and
    always_off, in interleaved rounds (the order alternating): what wrk cannot resolve."""
    from aiva.settings import load_settings
    from aiva.web.app import create_reference_app

    sys.stderr = Path(os.devnull).open("w")  # noqa: SIM115  (the app's console output)
    figures: dict[str, list[float]] = {"trace_based": [], "always_off": []}
    for round_no in range(rounds):
        order = ("trace_based", "always_off") if round_no % 2 else ("always_off", "trace_based")
        for name in order:
            variables = {**env, FILTER_VARIABLE: name}
            settings = load_settings(variables, config_dir=env["AIVA_CONFIG_DIR"])
            app = create_reference_app(settings.settings)
            figures[name].append(asyncio.run(_per_request_us(app, INPROCESS_REQUESTS)))
    return figures


async def _per_request_us(app: Any, requests: int) -> float:
    """CPU µs a request (the whole process: export threads included), lifespan running."""
    state, lifespan, inbox = await _started(app)
    await _serve(app, state, ROUTE_PATH, 300)
    gc.collect()
    gc.freeze()  # as `aiva serve` does once started
    started = time.process_time()
    await _serve(app, state, ROUTE_PATH, requests)
    spent = time.process_time() - started
    gc.unfreeze()
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return spent / requests * 1e6


async def _started(
    app: Any,
) -> tuple[dict[str, Any], asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    """The app's lifespan started: (its state, the lifespan task, its inbox)."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def lifespan_send(message: dict[str, Any]) -> None:
        sent.append(message)

    await inbox.put({"type": "lifespan.startup"})
    lifespan_scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    lifespan = asyncio.create_task(app(lifespan_scope, inbox.get, lifespan_send))
    while not sent:
        await asyncio.sleep(0.01)
    return state, lifespan, inbox


async def _probe(app: Any, mode: str, count: int) -> dict[str, float]:
    from prometheus_client.exposition import choose_encoder

    from aiva.telemetry.metrics import ProducingPrometheusReader

    state, lifespan, inbox = await _started(app)
    for path in (ROUTE_PATH, "/api/demo/items/x", "/info", "/nothing-here"):
        await _serve(app, state, path, 500)
    gc.collect()
    gc.freeze()  # as `aiva serve` does once started
    telemetry = state["aiva"].telemetry
    # The SDK keeps its readers private (1.45): the Prometheus reader is found there.
    readers = telemetry.meter_provider._metric_readers
    reader = next(r for r in readers if isinstance(r, ProducingPrometheusReader))
    result: dict[str, float] = {}
    if mode == "other":
        print(json.dumps({"ready": 1.0}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    else:
        encoder, _ = choose_encoder(SCRAPE_HEADERS["Accept"])

        def scrape() -> None:
            gzip.compress(encoder(telemetry.registry), 6)  # as aiva.web.routes.metrics

        scrape()
        result["scrape_ms"] = _thread_ms(scrape, count)
        if mode == "share":
            result["snapshot_ms"] = _thread_ms(reader.exposition.publish, count)
    await inbox.put({"type": "lifespan.shutdown"})
    await lifespan
    return result


def _thread_ms(work: Any, count: int) -> float:
    """CPU milliseconds of this thread per call of work, median of 5 batches."""
    batches = []
    for _ in range(5):
        started = time.thread_time()
        for _ in range(max(1, count // 5)):
            work()
        batches.append((time.thread_time() - started) * 1000 / max(1, count // 5))
    return statistics.median(batches)


async def _serve(app: Any, state: dict[str, Any], path: str, requests: int) -> None:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for _ in range(requests):
        await app({**scope, "state": dict(state)}, receive, send)


def _probe_argv(mode: str, directory: Path, count: int) -> list[str]:
    return [
        "taskset", "-c", SERVER_CORE, sys.executable, str(Path(__file__).resolve()),
        "--probe", mode, "--probe-dir", str(directory), "--probe-count", str(count),
    ]  # fmt: skip


def _probe_env() -> dict[str, str]:
    return clean_env({"PYTHONPATH": str(BENCH_DIR)})


def measure_mechanism(workdir: Path, count: int) -> dict[str, float]:
    """Snapshot and scrape CPU in a worker with a live second worker, and a plain
    scrape with one worker (no shared folder)."""
    directory = workdir / "probe"
    (directory / "share").mkdir(parents=True, mode=0o700)
    other = subprocess.Popen(
        _probe_argv("other", directory, count),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_probe_env(),
        start_new_session=True,
    )
    try:
        assert other.stdout is not None
        if "ready" not in other.stdout.readline().decode():
            raise BenchError("the second in-process worker did not start")
        time.sleep(1.5)  # its snapshot thread has written at least once
        shared = _run_probe("share", directory, count)
    finally:
        with contextlib.suppress(OSError):
            assert other.stdin is not None
            other.stdin.close()
        try:
            other.wait(30)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait(5)
    plain = _run_probe("plain", directory, count)
    return {
        "snapshot_ms": shared["snapshot_ms"],
        "scrape_shared_ms": shared["scrape_ms"],
        "scrape_plain_ms": plain["scrape_ms"],
    }


def _run_probe(mode: str, directory: Path, count: int) -> dict[str, Any]:
    done = subprocess.run(
        _probe_argv(mode, directory, count),
        capture_output=True,
        env=_probe_env(),
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"in-process probe {mode} failed: {done.stderr.decode()[-800:]}")
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


def exemplars_inprocess(rounds: int) -> tuple[float, float] | None:
    """benchmarks/exemplars_inprocess.py's figure, trace_based against always_off:
    (median, best) µs a record; None when that script is missing or fails."""
    argv = [
        "taskset", "-c", SERVER_CORE, sys.executable, str(BENCH_DIR / "exemplars_inprocess.py"),
        "--rounds", str(rounds), "--records", "100000",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, timeout=300, check=True, env=_probe_env())
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("exemplars_inprocess.py failed: %s", exc)
        return None
    for line in done.stdout.decode().splitlines():
        if "trace_based" in line and "median" in line:
            numbers = [float(w) for w in line.replace(",", " ").split() if _is_number(w)]
            if len(numbers) >= 2:
                return numbers[1], numbers[0]
    return None


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


# --- the report ---------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _p95(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _verdict(value: float, limit: float) -> str:
    return "PASS" if value <= limit else "FAIL"


def report(
    runs: Sequence[Run],
    mechanism: dict[str, float] | None,
    exemplars: tuple[tuple[float, float] | None, dict[str, list[float]]],
    opts: argparse.Namespace,
) -> list[str]:
    """The report's lines."""
    ok = [r for r in runs if r.error is None]
    by = {v: [r for r in ok if r.variant == v] for v in VARIANTS}
    lines = [
        f"workers: {opts.rounds} round(s) x {opts.duration}s (+{opts.warmup}s warm-up), "
        f"wrk -t1 -c{opts.connections} pinned to core 1; the server NOT pinned: its workers "
        "share both cores with wrk and rotel (2 cores), so 2 workers cannot reach 2x",
        "reference app GET /api/demo/items/42, traces ratio 1.0 (every request sampled), "
        "Prometheus on, OTLP to rotel; CPU = parent + workers (psutil); medians over rounds",
        "",
        f"{'server':26s} {'req/s':>8s} {'CPU us/req':>10s} {'p99 ms':>7s} "
        f"{'idle CPU ms/s':>13s} {'scrape ms med':>13s} {'p95':>6s} {'runs':>5s}",
    ]
    for variant, items in by.items():
        if not items:
            lines.append(f"{variant.name:26s} no successful run")
            continue
        scrapes = [ms for r in items for ms in r.scrape_ms]
        lines.append(
            f"{variant.name:26s} {_median([r.rps for r in items]):8.0f} "
            f"{_median([r.cpu_us_per_req for r in items]):10.1f} "
            f"{_median([r.p99_ms for r in items]):7.2f} "
            f"{_median([r.idle_cpu_ms_per_s for r in items]):13.1f} "
            f"{_median(scrapes):13.2f} {_p95(scrapes):6.2f} {len(items):5d}"
        )
    lines.append(
        f"scrapes: {opts.scrapes} a run after the load (idle), fresh connection each, "
        "OpenMetrics + gzip as Prometheus asks; latency = request to last byte, client side"
    )
    for run in runs:
        if run.error:
            lines.append(f"FAILED round {run.round} {run.variant.name}: {run.error}")
    lines.append("")
    lines.extend(_mechanism_lines(by, mechanism))
    lines.append("")
    lines.extend(_exemplar_lines(runs, *exemplars))
    return lines


def _mechanism_lines(by: dict[Variant, list[Run]], mechanism: dict[str, float] | None) -> list[str]:
    if mechanism is None:
        return ["cross-worker mechanism: not measured"]
    two = by[TWO]
    per_worker_rps = _median([r.rps for r in two]) / 2 if two else float("nan")
    snapshot_ms = mechanism["snapshot_ms"]
    per_request_us = snapshot_ms * 1000 / per_worker_rps  # one snapshot a second per worker
    scrape_added = mechanism["scrape_shared_ms"] - mechanism["scrape_plain_ms"]
    # One scrape a second lands on one of the two workers: half a scrape a worker.
    with_scrapes_us = (snapshot_ms + scrape_added / 2) * 1000 / per_worker_rps
    idle_one = _median([r.idle_cpu_ms_per_s for r in by[ONE]]) if by[ONE] else float("nan")
    idle_two = _median([r.idle_cpu_ms_per_s for r in two]) if two else float("nan")
    # Two idle workers against twice one idle worker: each worker's snapshot thread plus
    # half of the supervisor's own work (its pings to the workers): an upper bound.
    idle_extra = (idle_two - 2 * idle_one) / 2
    return [
        "cross-worker /metrics mechanism (in-process, core 0, the reference app's telemetry "
        "built as a worker builds it):",
        f"  one snapshot (the snapshot thread's tick, once a second per worker): "
        f"{snapshot_ms:.2f} CPU ms",
        f"  per request at {per_worker_rps:.0f} req/s per worker (2 workers above): "
        f"{per_request_us:.2f} CPU us/req: {_verdict(per_request_us, SHARE_TARGET_US)} "
        f"(target <= {SHARE_TARGET_US:.0f} us)",
        f"  one scrape: {mechanism['scrape_shared_ms']:.2f} CPU ms with a second live worker's "
        f"snapshot to merge, {mechanism['scrape_plain_ms']:.2f} with one worker: "
        f"{scrape_added:+.2f} ms a scrape for the mechanism (own snapshot written, the other "
        "read and merged)",
        f"  cross-check on the running servers: idle, 2 workers take {idle_two:.1f} CPU ms/s, "
        f"1 worker {idle_one:.1f}: {idle_extra:.1f} ms/s a worker for the snapshot thread and "
        f"the supervisor (an upper bound; psutil counts 10 ms ticks): "
        f"{idle_extra * 1000 / per_worker_rps:.2f} us/req at that rate",
        f"  with Prometheus scraping once a second (the tests' interval; 15 s is usual): "
        f"{with_scrapes_us:.2f} CPU us/req: {_verdict(with_scrapes_us, SHARE_TARGET_US)}",
        "  (nothing of it runs on the request path: it is a fixed cost a second, so its share "
        f"of a request grows as traffic falls: {snapshot_ms * 10:.0f} us/req at 100 req/s "
        f"per worker; an idle worker pays {snapshot_ms:.1f} ms/s)",
    ]


def _exemplar_lines(
    runs: Sequence[Run], inprocess: tuple[float, float] | None, whole: dict[str, list[float]]
) -> list[str]:
    on = {r.round: r for r in runs if r.variant == ONE and r.error is None}
    off = {r.round: r for r in runs if r.variant == ONE_OFF and r.error is None}
    pairs = [on[n].cpu_us_per_req - off[n].cpu_us_per_req for n in sorted(on) if n in off]
    lines = [
        "exemplars (1 worker, every request sampled):",
        f"  under wrk, trace_based - always_off: {_pairs(pairs)}",
    ]
    if inprocess is not None:
        median, best = inprocess
        lines.append(
            f"  in-process, their own code (exemplars_inprocess.py: ProducedHistogram.record "
            f"with a sampled span): {median:+.3f} us/req median, best {best:+.3f}: "
            f"{_verdict(median, EXEMPLAR_TARGET_US)} (target <= {EXEMPLAR_TARGET_US:.0f} us)"
        )
    inproc_pairs = [a - b for a, b in zip(whole["trace_based"], whole["always_off"], strict=True)]
    lines.append(
        f"  in-process, the whole reference app over ASGI on core 0 ({len(inproc_pairs)} "
        f"interleaved rounds of {INPROCESS_REQUESTS} requests): trace_based "
        f"{_median(whole['trace_based']):.1f}, always_off {_median(whole['always_off']):.1f} "
        f"CPU us/req; difference {_pairs(inproc_pairs)}"
    )
    return lines


def _pairs(pairs: Sequence[float]) -> str:
    """Median of same-round differences, each round's, and a verdict against the exemplar
    target when the rounds agree well enough to tell (their middle half within twice the
    target), else 'inconclusive'."""
    if not pairs:
        return "no pair of successful runs"
    median = statistics.median(pairs)
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) >= 4 else [min(pairs), max(pairs)]
    spread = quartiles[-1] - quartiles[0]
    verdict = (
        f"{_verdict(median, EXEMPLAR_TARGET_US)} (target <= {EXEMPLAR_TARGET_US:.0f} us)"
        if len(pairs) > 1 and spread <= 2 * EXEMPLAR_TARGET_US
        else f"inconclusive (the rounds' middle spreads over {spread:.0f} us)"
    )
    per_round = ", ".join(f"{p:+.1f}" for p in pairs)
    return f"{median:+.1f} CPU us/req (per round {per_round}): {verdict}"


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/workers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--duration", type=int, default=5, help="measured seconds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up seconds (default 1)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--idle", type=float, default=5.0, help="idle CPU seconds (default 5)")
    parser.add_argument("--scrapes", type=int, default=50, help="scrapes a run (default 50)")
    parser.add_argument(
        "--inprocess-rounds", type=int, default=7, help="in-process exemplar rounds (7)"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs")
    parser.add_argument(
        "--probe", choices=("share", "plain", "other", "exemplars"), help=argparse.SUPPRESS
    )
    parser.add_argument("--probe-dir", help=argparse.SUPPRESS)
    # The probe's count: scrapes and snapshots timed, or rounds (exemplars).
    parser.add_argument("--probe-count", type=int, default=50, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    numbers = (opts.rounds, opts.duration, opts.warmup, opts.connections, opts.scrapes)
    if min(*numbers, opts.inprocess_rounds) < 1:
        parser.error(
            "--rounds, --duration, --warmup, --connections, --scrapes and "
            "--inprocess-rounds must be at least 1"
        )
    if opts.idle <= 0:
        parser.error("--idle must be positive")
    return opts


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 after a report, 1 on a benchmark error, 130 when interrupted."""
    opts = parse_args(argv)
    if opts.probe:
        _probe_main(opts.probe, opts.probe_dir, opts.probe_count)
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            log.error("%s not found on PATH (apt-get install -y %s)", tool, tool)
            return 1
    load_before = os.getloadavg()
    log.info("about %.0f s", opts.rounds * 3 * (opts.warmup + opts.duration + opts.idle + 8) + 40)
    workdir = Path(tempfile.mkdtemp(prefix="aiva-workers-"))
    registry = Registry()
    try:
        rotel = Rotel(workdir, registry)
        rotel.start()
        config_dir = workdir / "aiva-config"
        config_dir.mkdir()
        runs = run_rounds(Context(opts, rotel, registry, workdir, config_dir))
        registry.stop_all()
        log.info("the mechanism in-process")
        mechanism = measure_mechanism(workdir, opts.scrapes)
        log.info("exemplars in-process")
        inprocess = exemplars_inprocess(5)
        whole: dict[str, list[float]] = _run_probe(
            "exemplars", workdir / "probe", opts.inprocess_rounds
        )
    except BenchError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted; every started process was stopped")
        return 130
    finally:
        registry.stop_all()
        if opts.keep_workdir:
            log.info("logs kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_after = os.getloadavg()
    print("\n".join(report(runs, mechanism, (inprocess, whole), opts)))
    print(
        f"\nload average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)} (1, 5, 15 min); noise: a shared 2-core "
        "machine: compare figures of one run; a load above ~0.5 before the run means "
        "other work shared the cores"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
