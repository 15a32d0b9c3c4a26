"""The garbage collector's work in `aiva serve` under load (issue #14): the young
generation's threshold `aiva serve` sets (aiva.heap: 10,000) against the interpreter's
700.

    python benchmarks/gc_collections.py [--rounds 2] [--duration 8]

Each round serves `GET /api/demo/work` under `aiva_full`'s settings (traces at 1.0,
Prometheus, OTLP spans and log records to a private rotel) with `wrk -t1 -c16` (core 1;
the server on core 0), once as `aiva serve` leaves the threshold and once with 701 set
before it starts (a threshold of the service's own, which aiva keeps: the default's
behaviour). A sitecustomize (benchmarks/gc_site) times every collection with
`gc.callbacks`; the figures are the collections a second and their CPU µs a request
over the measured run, and the server's CPU µs a request (noisy on a shared machine:
the collector's own time is the figure to read).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    LOOPBACK,
    Owned,
    Registry,
    Rotel,
    clean_env,
    cpu_seconds,
    free_port,
    run_wrk,
    wait_for_route,
)

ROUTE = "/api/demo/work"
SITE = Path(__file__).resolve().parent / "gc_site"
SETTINGS = {
    "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": "1.0",
    "AIVA_TELEMETRY__METRICS__ENABLED": "true",
    "AIVA_TELEMETRY__METRICS__PROMETHEUS__ENABLED": "true",
    "AIVA_TELEMETRY__LOGS__OTLP": "true",
    "AIVA_TELEMETRY__LOGS__LEVEL": "INFO",
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
}
WAYS = {"aiva serve (10000)": None, "default (701)": "701"}


def stats(path: Path) -> tuple[int, list[int], list[float]]:
    """The last two lines the server wrote: threshold, then collections and seconds
    per generation between them."""
    first, last = (line.split() for line in path.read_text().splitlines()[-2:])
    counts = [int(b) - int(a) for a, b in zip(first[1:4], last[1:4], strict=True)]
    seconds = [float(b) - float(a) for a, b in zip(first[4:7], last[4:7], strict=True)]
    return int(last[0]), counts, seconds


def one_run(workdir: Path, rotel: Rotel, young: str | None, seconds: int) -> dict[str, float]:
    registry = Registry()
    port = free_port()
    stats_path = workdir / f"gc-{time.monotonic_ns()}.txt"
    env = {
        **SETTINGS,
        "AIVA_SERVER__PORT": str(port),
        "AIVA_TELEMETRY__OTLP__ENDPOINT": rotel.grpc_endpoint,
        "PYTHONPATH": os.pathsep.join([str(SITE), *sys.path[1:]]),
        "BENCH_GC_STATS": str(stats_path),
    }
    if young is not None:
        env["BENCH_GC_YOUNG"] = young
    argv = ["taskset", "-c", "0", sys.executable, "-m", "aiva", "serve"]
    server = registry.start(Owned("aiva", argv, workdir / "server.log", clean_env(env)))
    try:
        wait_for_route(server, port, ROUTE, 30)
        url = f"http://{LOOPBACK}:{port}{ROUTE}"
        run_wrk(url, 2, 16, workdir / "wrk.log")  # warm-up
        os.kill(server.pid, signal.SIGUSR1)
        cpu = cpu_seconds(server.pid)
        measured = run_wrk(url, seconds, 16, workdir / "wrk.log")
        cpu = cpu_seconds(server.pid) - cpu
        os.kill(server.pid, signal.SIGUSR1)
        time.sleep(0.3)
        threshold, counts, spent = stats(stats_path)
    finally:
        registry.stop_all()
    return {
        "threshold": threshold,
        "young/s": counts[0] / measured.seconds,
        "middle/s": counts[1] / measured.seconds,
        "full/s": counts[2] / measured.seconds,
        "gc us/req": sum(spent) / measured.requests * 1e6,
        "gc % cpu": sum(spent) / cpu * 100,
        "cpu us/req": cpu / measured.requests * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=8)
    opts = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    registry = Registry()
    with tempfile.TemporaryDirectory(prefix="aiva-gc-") as folder:
        workdir = Path(folder)
        rotel = Rotel(workdir, registry)
        try:
            rotel.start()
            for _ in range(opts.rounds):
                for way, young in WAYS.items():
                    results[way].append(one_run(workdir, rotel, young, opts.duration))
        finally:
            registry.stop_all()
    for way, runs in results.items():
        figures = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        print(f"{way:20s} " + "  ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
