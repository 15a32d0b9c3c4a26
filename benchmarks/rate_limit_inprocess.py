"""In-process cost of rate limiting (`security.rate_limit`), memory storage.

As `benchmarks/instrument_inprocess.py` does, the ASGI app is called directly on one
core (no network, no wrk): CPU µs a request for Starlette instrumented by aiva with its
defaults (rate limiting off), with rate limiting on and every request allowed (the
RateLimit fields added to each response), and with every request refused (429). One
client, as the harness sends every request from 127.0.0.1. Rounds are interleaved;
each figure is the median over rounds.

On a shared machine those differences drown in the noise of a whole request (60-80
µs), so the rate limit middleware is also timed on its own, around an ASGI app that
answers at once: the best of 9 runs of 20,000 requests each, against that app alone.

Run: `taskset -c 0 python benchmarks/rate_limit_inprocess.py [--rounds 7]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from instrument_inprocess import SETTINGS_ENV, per_request_us, starlette_app

ON = {"AIVA_SECURITY__RATE_LIMIT__ENABLED": "true"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=5000)
    opts = parser.parse_args()
    os.environ.update(SETTINGS_ENV)
    sys.stderr = Path(os.devnull).open("w")  # the access line's console output  # noqa: SIM115
    import aiva
    from aiva.settings import load_settings

    def settings(**more: str) -> Any:
        return load_settings({**SETTINGS_ENV, **more}, config_dir="/nonexistent").settings

    makers = {
        "off": settings(),
        # Far more than the run sends: every request allowed.
        "on, allowed": settings(**ON, AIVA_SECURITY__RATE_LIMIT__REQUESTS="1000000000"),
        # One: after the warm-up's first request, every request refused.
        "on, refused": settings(**ON, AIVA_SECURITY__RATE_LIMIT__REQUESTS="1"),
    }
    figures: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(opts.rounds):
        for name, made in makers.items():
            app = aiva.instrument(starlette_app(), made)
            figures[name].append(asyncio.run(per_request_us(app, opts.requests)))
    out = sys.__stdout__
    assert out is not None
    print(f"aiva from {Path(aiva.__file__).parent}", file=out)
    for name, values in figures.items():
        print(f"{name:14s} {statistics.median(values):7.1f} CPU us/request", file=out)
    for name in ("on, allowed", "on, refused"):
        added = [a - b for a, b in zip(figures[name], figures["off"], strict=True)]
        print(
            f"{name}: {statistics.median(added):+.1f} us against off "
            f"(per round: {', '.join(f'{d:+.1f}' for d in added)})",
            file=out,
        )
    for name, (added, fields) in asyncio.run(middleware_alone(settings)).items():
        print(f"middleware alone, {name:22s} {added:+.2f} us ({fields})", file=out)


async def middleware_alone(settings: Any) -> dict[str, tuple[float, str]]:
    """CPU µs the middleware adds to an app that answers at once, per case: the best
    of 9 runs of 20,000 requests, less the best of 9 of the app alone (interleaved)."""
    from aiva.web.rate_limit import STATE_KEY, Limiter, RateLimitMiddleware, RateLimits

    async def answer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def run_us(app: Any, state: dict[str, Any], path: str) -> float:
        scope = {"type": "http", "path": path, "root_path": "", "method": "GET",
                 "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1)}  # fmt: skip
        sent.clear()
        started = time.process_time()
        for _ in range(20_000):
            await app({**scope, "state": state}, receive, send)
        return (time.process_time() - started) / 20_000 * 1e6

    cases = {
        "allowed, > half left": ("1000000000", "/items/1"),
        # Less than half left throughout: 200,001 of 400,000 used first, 180,000 timed.
        "allowed, < half left": ("400000", "/items/1"),
        "refused": ("1", "/items/1"),
        "exempt (/livez)": ("1", "/livez"),
    }
    figures = {}
    for name, (requests, path) in cases.items():
        made = settings(**ON, AIVA_SECURITY__RATE_LIMIT__REQUESTS=requests)
        limits = RateLimits.from_settings(made.security.rate_limit, ["/livez", "/metrics"])
        limiter = Limiter.open(limits)
        if name.startswith("allowed, <"):
            for _ in range(200_001):
                limiter.windows.hit_now(limits.default.policy, "127.0.0.1")  # type: ignore[attr-defined]
        limited = RateLimitMiddleware(answer, limits, [])
        alone, with_it = [], []
        for _ in range(9):
            alone.append(await run_us(answer, {}, path))
            with_it.append(await run_us(limited, {STATE_KEY: limiter}, path))
        fields = sorted({name.decode() for name, _ in sent[-1]["headers"]})
        figures[name] = (min(with_it) - min(alone), ", ".join(fields) or "no fields")
    return figures


if __name__ == "__main__":
    main()
