"""Requests a second under wrk for uvicorn's HTTP protocols serving aiva's reference app:
httptools (uvicorn's stock protocol), h11 (stock), and aiva's limited httptools protocol
(aiva.fast.uvicorn_protocol, what `aiva serve` uses).

The three servers run side by side, each pinned to core 0 (`taskset -c 0`); wrk, pinned
to core 1, loads one at a time (`-t1 -c16`, GET /api/demo/items/1), rounds interleaved.
Each figure is the median over rounds; the ratios are of medians. On a shared machine
the load average is printed: compare the ratios, not the absolute rates.

Run: `python benchmarks/http_parser_wrk.py [--rounds 3] [--seconds 5]` (needs wrk).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

VARIANTS = ("httptools", "h11", "aiva")
PATH = "/api/demo/items/1"
ENV = {
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",  # no access line: the parsers' cost shows
    "AIVA_TELEMETRY__INSTRUMENTATIONS": "[]",
}


def serve(variant: str, port: int) -> None:
    """One server: aiva's reference app under uvicorn with the variant's protocol."""
    import uvicorn

    from aiva.fast import probe
    from aiva.fast.uvicorn_protocol import HeadLimits, http_protocol
    from aiva.server import load_app
    from aiva.settings import load_settings
    from aiva.telemetry.log_setup import configure_logging

    loaded = load_settings(os.environ)
    configure_logging(loaded.settings.telemetry.logs)
    limits = loaded.settings.server.limits
    http = variant
    if variant == "aiva":
        http = http_protocol(
            HeadLimits(limits.max_header_bytes, limits.max_headers, limits.header_timeout_s),
            probe(),
        )
    config = uvicorn.Config(
        load_app(loaded),
        host="127.0.0.1",
        port=port,
        http=http,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_keep_alive=limits.keepalive_timeout_s,  # type: ignore[arg-type]
    )
    uvicorn.Server(config).run()


def wrk(port: int, seconds: int) -> float:
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s"]
    out = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk output unexpected:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve[0], int(opts.serve[1]))
        return
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, **ENV, "PYTHONPATH": src}
    ports = {variant: 18700 + i for i, variant in enumerate(VARIANTS)}
    servers = [
        subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, __file__, "--serve", variant, str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for variant, port in ports.items()
    ]
    try:
        for port in ports.values():
            _wait_ready(port)
        for port in ports.values():
            wrk(port, 1)  # warm-up
        rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        loads = []
        for _ in range(opts.rounds):
            loads.append(os.getloadavg()[0])
            for variant, port in ports.items():
                rates[variant].append(wrk(port, opts.seconds))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    median = {variant: statistics.median(values) for variant, values in rates.items()}
    print(f"load average (1 min) at each round: {', '.join(f'{x:.2f}' for x in loads)}")
    for variant, values in rates.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(
            f"{variant:10s} {median[variant]:8.0f} req/s  ({runs})  {1e6 / median[variant]:.0f} µs"
        )
    print(f"httptools / h11: {median['httptools'] / median['h11']:.2f}")
    print(f"aiva / httptools: {median['aiva'] / median['httptools']:.3f}")


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/livez", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready")


if __name__ == "__main__":
    main()
