"""`aiva serve` with benchmark-only switches that put back what ran before issue #12 where
no setting can: benchmarks/overhead's `--protections` measures what #12 added that way.

Run as `BENCH_SWITCHES=plain_httptools,direct_console python benchmarks/serve_switched.py
serve [aiva serve's options]`. The switches (BENCH_SWITCHES, comma-separated):

- `plain_httptools`: uvicorn's own httptools protocol (`http="httptools"`) instead of
  aiva's LimitedHttpToolsProtocol: no head size or header count limit, no head timeout
  (aiva.fast.uvicorn_protocol);
- `direct_console`: the console output as a plain `logging.StreamHandler` on stderr,
  formatted and written on the event loop as before #12, instead of the bounded queue
  drained by its own thread (aiva.telemetry.log_queue).

What settings do switch (the load-shedding limit, the attribute value limit, the rate
limiter) is switched by settings in benchmarks/configs.py, not here. This file only
replaces two module attributes of aiva before its command runs; it is never imported by
aiva, and nothing outside the benchmark reads BENCH_SWITCHES.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

SWITCHES_VARIABLE = "BENCH_SWITCHES"
PLAIN_HTTPTOOLS = "plain_httptools"
DIRECT_CONSOLE = "direct_console"
KNOWN = (PLAIN_HTTPTOOLS, DIRECT_CONSOLE)


def _plain_httptools(limits: Any, fast: Any) -> str:
    """aiva.server's `http_protocol`, answering uvicorn's stock httptools protocol."""
    return "httptools"


def _direct_console() -> logging.Handler:
    """aiva.telemetry.log_setup's `console_output`: the handler aiva had before #12."""
    return logging.StreamHandler(sys.stderr)


def apply(switches: set[str]) -> None:
    """Replace the named parts of aiva (before `aiva serve` looks them up)."""
    if PLAIN_HTTPTOOLS in switches:
        import aiva.server

        aiva.server.http_protocol = _plain_httptools  # type: ignore[assignment]
    if DIRECT_CONSOLE in switches:
        import aiva.telemetry.log_setup

        aiva.telemetry.log_setup.console_output = _direct_console  # type: ignore[assignment]


def main() -> Any:
    """Apply BENCH_SWITCHES, then run the `aiva` command with this process's arguments."""
    switches = {s.strip() for s in os.environ.get(SWITCHES_VARIABLE, "").split(",") if s.strip()}
    unknown = sorted(switches - set(KNOWN))
    if unknown:
        raise SystemExit(f"{SWITCHES_VARIABLE}: unknown switch(es) {', '.join(unknown)}")
    apply(switches)
    from aiva.entry import main as aiva_main

    return aiva_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
