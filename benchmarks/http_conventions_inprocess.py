"""In-process cost of the HTTP server conventions' attributes and body size histograms.

As `benchmarks/instrument_inprocess.py` does, the ASGI app is called directly on one
core (no network, no wrk), with a browser-like request head (Host with a port, a real
User-Agent, Accept headers): CPU µs a request for bare Starlette, for Starlette
instrumented by aiva (traces, Prometheus reader, the access line to /dev/null) with
its defaults, and with `telemetry.http.body_size_metrics` on. Rounds are interleaved;
each figure is the median over rounds.

Run: `taskset -c 0 python benchmarks/http_conventions_inprocess.py [--rounds 7]`. To
compare two versions of aiva, run it with each one first on PYTHONPATH (a version
without the body size setting skips that row).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path
from typing import Any

# The harness is instrument_inprocess.py's (same route, same settings, same app).
from instrument_inprocess import SETTINGS_ENV, per_request_us, starlette_app

HEADERS = [
    (b"host", b"api.example:8443"),
    (
        b"user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"Chrome/126.0.0.0 Safari/537.36",
    ),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"connection", b"keep-alive"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    sys.stderr = Path(os.devnull).open("w")  # the access line's console output  # noqa: SIM115
    import aiva
    from aiva.settings import load_settings
    from aiva.settings.model import TelemetrySettings

    def settings(**more: str) -> Any:
        return load_settings({**SETTINGS_ENV, **more}, config_dir="/nonexistent").settings

    makers = {
        "starlette": starlette_app,
        "starlette+aiva": lambda: aiva.instrument(starlette_app(), settings()),
    }
    if "http" in TelemetrySettings.__dataclass_fields__:
        with_sizes = settings(AIVA_TELEMETRY__HTTP__BODY_SIZE_METRICS="true")
        makers["+body sizes"] = lambda: aiva.instrument(starlette_app(), with_sizes)
    figures: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(opts.rounds):
        for name, make in makers.items():
            figures[name].append(asyncio.run(per_request_us(make(), opts.requests, HEADERS)))
    out = sys.__stdout__
    assert out is not None
    print(f"aiva from {Path(aiva.__file__).parent}", file=out)
    for name, values in figures.items():
        print(f"{name:16s} {statistics.median(values):7.1f} CPU us/request", file=out)

    def added(ours: str, base: str) -> list[float]:
        return [a - b for a, b in zip(figures[ours], figures[base], strict=True)]

    aiva_adds = added("starlette+aiva", "starlette")
    print(f"aiva adds {statistics.median(aiva_adds):.1f} us to a Starlette request", file=out)
    if "+body sizes" in figures:
        sizes = added("+body sizes", "starlette+aiva")
        print(
            f"body size histograms add {statistics.median(sizes):.1f} us (per round "
            f"{', '.join(f'{s:.1f}' for s in sizes)})",
            file=out,
        )


if __name__ == "__main__":
    main()
