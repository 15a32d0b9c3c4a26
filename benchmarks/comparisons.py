"""The pairs with their own baseline: FastAPI under aiva.instrument, an httpx client span,
the work route against itself with telemetry off (issue #14; one signal at a time on
--breakdown-work), and issue #12's protections one at a time (--protections).

Each pair runs in the same interleaved rounds as the rest; `x base` and `+CPU us/req`
are against the configuration named in `vs`, run in the same round. The checks compare
CPU µs added per request (medians of same-round differences), which is what the
issue's criteria are about; they are printed, never turned into an exit code.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence

from configs import (
    PROTECTIONS,
    PROTECTIONS_OFF,
    WORK_BREAKDOWN,
    WORK_FULL,
    WORK_OFF,
    WORK_PLAIN,
)
from report import BARE, COLUMNS, FULL, RunResult, Summary, row

# (title, configurations in the order printed)
SECTIONS = (
    (
        "FastAPI under aiva.instrument against bare FastAPI",
        ("fastapi_bare", "fastapi_aiva_traces_prom", "fastapi_aiva_full"),
    ),
    (
        "one httpx call to the local upstream, client instrumentation off and on",
        ("httpx_call_off", "httpx_call_on"),
    ),
    (
        "the work route (GET /api/demo/work: 4 spans, 5 log lines, 4 histogram points a "
        "request) against itself with telemetry off",
        WORK_BREAKDOWN,
    ),
    (
        "issue #12's protections on a quiet base (traces 0.1, Prometheus, console access "
        "line), one at a time (each row adds one to the row above, its `vs`)",
        PROTECTIONS,
    ),
)
SECTION_CONFIGS = frozenset(name for _, names in SECTIONS for name in names)

# (label, aiva on FastAPI, bare FastAPI, aiva on Starlette, bare Starlette)
FASTAPI_CHECKS = (
    ("traces + metrics (Prometheus)", "fastapi_aiva_traces_prom", "fastapi_bare",
     "aiva_traces_prom", BARE),
    ("full pipeline", "fastapi_aiva_full", "fastapi_bare", FULL, BARE),
)  # fmt: skip
FASTAPI_TOLERANCE = 1.10  # "within 10 %"
# The client span: the pair's difference; aiva's server span: traces only over bare.
CLIENT_SPAN = ("httpx_call_on", "httpx_call_off")
SERVER_SPAN = ("aiva_traces", BARE)

Pair = tuple[str, str]


def added_by_round(results: Iterable[RunResult], pair: Pair) -> dict[int, float]:
    """CPU µs per request that pair[0] adds over pair[1], per round where both ran."""
    config, baseline = pair
    ok = [r for r in results if r.ok]
    base = {r.round: r.cpu_us_per_req for r in ok if r.config == baseline}
    return {
        r.round: r.cpu_us_per_req - base[r.round]
        for r in ok
        if r.config == config and r.round in base
    }


def _compare(results: Sequence[RunResult], ours: Pair, reference: Pair) -> tuple[str, float | None]:
    """'+A us/req (x - y), +B (z - w): R x (rounds ...)' and R (None when not measurable)."""
    mine, theirs = added_by_round(results, ours), added_by_round(results, reference)
    missing = [f"{a} - {b}" for (a, b), d in ((ours, mine), (reference, theirs)) if not d]
    if missing:
        return f"n/a (no runs of {', '.join(missing)})", None
    a, b = statistics.median(mine.values()), statistics.median(theirs.values())
    text = f"+{a:.0f} us/req ({' - '.join(ours)}) against +{b:.0f} ({' - '.join(reference)})"
    if b <= 0:
        return f"{text}: n/a (the reference adds nothing)", None
    rounds = [mine[n] / theirs[n] for n in sorted(mine.keys() & theirs.keys()) if theirs[n] > 0]
    spread = ", ".join(f"{r:.2f}" for r in rounds)
    return f"{text}: {a / b:.2f}x (per round {spread})", a / b


# Issue #12: "the limits, the log queue and the rate limiter (when on) cost at most 3 µs a
# request in total". (label, the layer, the layer below it)
PROTECTION_LAYERS = (
    ("head limits (aiva's protocol, not uvicorn's plain httptools)", "guard_head", PROTECTIONS_OFF),
    ("load shedding (max_concurrency 1000, not null*)", "guard_shedding", "guard_head"),
    ("attribute value limit (8192, not null)", "guard_attributes", "guard_shedding"),
    ("log queue (not console writes on the loop)", "guard_log_queue", "guard_attributes"),
    ("rate limiter on (memory, never refusing)", "guard_rate_limit", "guard_log_queue"),
)  # fmt: skip
PROTECTIONS_SHIPPED = ("guard_log_queue", PROTECTIONS_OFF)  # the defaults: rate limiter off
PROTECTIONS_TOTAL = ("guard_rate_limit", PROTECTIONS_OFF)
PROTECTIONS_LIMIT_US = 3.0
# The shedding pair runs the same code both ways: the middleware counts requests in flight
# and compares the count with the limit whatever it is (null is sys.maxsize), and no run
# comes near 1000. Its same-round differences are the noise of this run: the resolution.
SAME_CODE = ("guard_shedding", "guard_head")


def _added(results: Sequence[RunResult], pair: Pair) -> tuple[str, float | None]:
    """'+A us/req (per round a, b, c)' and A: the median of same-round differences."""
    by_round = added_by_round(results, pair)
    if not by_round:
        return f"n/a (no runs of {' - '.join(pair)} in the same round)", None
    median = statistics.median(by_round.values())
    spread = ", ".join(f"{by_round[n]:+.1f}" for n in sorted(by_round))
    return f"{median:+.1f} us/req (per round {spread})", median


def protection_checks(results: Sequence[RunResult]) -> list[str]:
    """Each protection's added CPU µs a request, their total, and the 3 µs verdict."""
    lines = [
        f"check: issue #12's protections cost at most {PROTECTIONS_LIMIT_US:.0f} us a request "
        "in total (CPU us per request, medians of same-round differences)"
    ]
    for label, layer, below in PROTECTION_LAYERS:
        lines.append(f"  {label}: {_added(results, (layer, below))[0]}")
    text, _ = _added(results, PROTECTIONS_SHIPPED)
    lines.append(f"  the defaults as shipped ({' - '.join(PROTECTIONS_SHIPPED)}): {text}")
    text, total = _added(results, PROTECTIONS_TOTAL)
    noise = [abs(d) for d in added_by_round(results, SAME_CODE).values()]
    resolution = statistics.median(noise) if noise else None
    verdict = ""
    if total is not None:
        passed = total <= PROTECTIONS_LIMIT_US
        verdict = f": {'PASS' if passed else 'FAIL'} (limit {PROTECTIONS_LIMIT_US:.1f} us)"
        if resolution is not None and abs(total - PROTECTIONS_LIMIT_US) < resolution:
            verdict += ", within this run's noise"
    lines.append(f"  total, rate limiter on ({' - '.join(PROTECTIONS_TOTAL)}): {text}{verdict}")
    if resolution is not None:
        lines.append(
            f"  * the shedding pair runs the same code either way (the in-flight count and "
            f"its comparison run whatever the limit): its differences are this run's noise, "
            f"{resolution:.1f} us (median size; largest {max(noise):.1f})"
        )
    return lines


# Issue #14: the work route under the full pipeline serves at least 0.3x of itself with
# telemetry off (0.16x measured before), with zero spans and log records lost.
WORK_TARGET = 0.3
WORK_BEFORE = 0.16
# (label, the layer, the layer below it): --breakdown-work's rows, each over the one above.
WORK_LAYERS = (
    ("traces (4 spans at ratio 1.0)", "work_traces", WORK_OFF),
    ("metrics (Prometheus and OTLP)", "work_traces_metrics", "work_traces"),
    ("console lines (5 INFO lines as JSON)", "work_console", "work_traces_metrics"),
    ("OTLP log records (the same 5 lines)", WORK_FULL, "work_console"),
)  # fmt: skip


def work_checks(results: Sequence[RunResult], sums: Mapping[str, Summary]) -> list[str]:
    """Issue #14's work-route target, and the signal-by-signal split when its layers ran."""
    full = sums.get(WORK_FULL)
    if full is None or not full.rounds_ok or full.ratio is None:
        verdict = "not run" if full is None else "failed"
    else:
        met = full.ratio >= WORK_TARGET and full.spans_lost == 0 and full.logs_lost == 0
        verdict = (
            f"{full.ratio:.2f}x, {_opt_us(full.added_cpu_us_per_req)} us/req over {WORK_OFF}, "
            f"lost spans {full.spans_lost} logs {full.logs_lost}: {'met' if met else 'NOT met'}"
        )
    lines = [
        f"target work route full pipeline >= {WORK_TARGET}x ({WORK_BEFORE}x before) with zero "
        f"spans and log records lost: {WORK_FULL} {verdict}"
    ]
    layers = [(label, layer, below) for label, layer, below in WORK_LAYERS if layer in sums]
    if len(layers) > 1:  # --breakdown-work
        lines.append(
            "work route by signal (CPU us a request each layer adds to the one above; medians "
            "of same-round differences):"
        )
        for label, layer, below in layers:
            lines.append(f"  {label}: {_added(results, (layer, below))[0]}")
        lines.append(
            f"  total ({WORK_FULL} - {WORK_OFF}): {_added(results, (WORK_FULL, WORK_OFF))[0]}"
        )
    if WORK_PLAIN in sums and full is not None:
        lines.append(
            f"the fast layer on the work route: {WORK_PLAIN} (telemetry.fast_path: off) "
            f"{_added(results, (WORK_PLAIN, WORK_FULL))[0]} over {WORK_FULL}"
        )
    return lines


def _opt_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0f}"


def checks(
    results: Sequence[RunResult], sums: Mapping[str, Summary], span_check: str | None = None
) -> list[str]:
    """The criteria whose configurations ran, each with its figures and a verdict: #10's
    two (FastAPI, client span; `span_check`: span_check_inprocess's line), #12's
    protections and #14's work route."""
    ran = {r.config for r in results}
    lines = protection_checks(results) if ran & set(PROTECTIONS) else []
    if ran & (SECTION_CONFIGS - set(PROTECTIONS) - set(WORK_BREAKDOWN)):
        lines += issue_10_checks(results, span_check)
    if ran & set(WORK_BREAKDOWN):
        lines += work_checks(results, sums)
    return lines


def issue_10_checks(results: Sequence[RunResult], span_check: str | None = None) -> list[str]:
    """The two criteria of issue #10, each with its figures and a PASS/FAIL verdict (the
    client span's from `span_check`, the in-process measurement, when given)."""
    lines = [
        "check: instrument on FastAPI adds no more CPU per request than create_app on "
        f"Starlette (within {FASTAPI_TOLERANCE - 1:.0%})"
    ]
    for label, fastapi, fastapi_bare, starlette, starlette_bare in FASTAPI_CHECKS:
        text, ratio = _compare(results, (fastapi, fastapi_bare), (starlette, starlette_bare))
        lines.append(f"  {label}: {text}{_verdict(ratio, FASTAPI_TOLERANCE)}")
    text, ratio = _compare(results, CLIENT_SPAN, SERVER_SPAN)
    lines.append("check: a client span costs no more than aiva's server span")
    if span_check is None:
        lines.append(f"  client span {text}{_verdict(ratio, 1.0)}")
        return lines
    spread = _spread(results, CLIENT_SPAN[1])
    lines.append(
        f"  under wrk (no verdict: httpx_call_off's rounds differ by up to {spread:.0f} CPU "
        f"us/req): client span {text}"
    )
    lines.append(f"  in-process (instrument_inprocess.py --spans-only, core 0): {span_check}")
    return lines


def _spread(results: Sequence[RunResult], config: str) -> float:
    """Largest minus smallest CPU µs a request of `config` over its rounds."""
    values = [r.cpu_us_per_req for r in results if r.ok and r.config == config]
    return max(values) - min(values) if values else 0.0


def _verdict(ratio: float | None, limit: float) -> str:
    if ratio is None:
        return ""
    return f": {'PASS' if ratio <= limit else 'FAIL'} (limit {limit:.2f}x)"


def _line(cells: Sequence[str]) -> str:
    specs = ("<24", "<14", *(spec for _, spec in COLUMNS[1:]))
    return "  ".join(format(cell, spec) for cell, spec in zip(cells, specs, strict=True))


def tables(
    sums: Mapping[str, Summary],
    baselines: Mapping[str, str],
    signals: Mapping[str, tuple[bool, bool]],
) -> list[str]:
    """One titled table per section that ran, with each row's baseline in `vs`."""
    header = _line(["config", "vs", *("x base" if t == "x bare" else t for t, _ in COLUMNS[1:])])
    lines: list[str] = []
    for title, names in SECTIONS:
        ran = [sums[n] for n in names if n in sums and sums[n].rounds_ok]
        if ran:
            lines += [f"{title}:", header]
            for s in ran:
                cells = row(s, *signals[s.config])
                lines.append(_line([cells[0], baselines[s.config], *cells[1:]]))
    return lines
