"""Results of benchmarks/overhead: run records, per-config medians, table and targets."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BARE = "bare"
FULL = "aiva_full"


@dataclass
class RunResult:
    """One server process under one configuration in one round."""

    config: str
    round: int
    error: str | None = None
    failed_start: bool = False
    probe_requests: int = 0
    warmup_requests: int = 0
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_s: float = 0.0
    cpu_us_per_req: float = 0.0
    peak_rss_mib: float = 0.0
    prom_series: int | None = None
    spans_sent: float = 0.0
    spans_received: int = 0
    logs_sent: float = 0.0
    logs_received: int = 0
    metric_exports_received: int = 0
    exit_code: int | None = None
    killed: bool = False
    stop_s: float = 0.0

    @property
    def ok(self) -> bool:
        """The run produced measurements."""
        return self.error is None


@dataclass
class Summary:
    """Medians over rounds for one configuration (ratios against bare in the same round)."""

    config: str
    description: str
    sampler_ratio: float
    rounds_ok: int
    rps: float = 0.0
    ratio: float | None = None
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    peak_rss_mib: float = 0.0
    cpu_us_per_req: float = 0.0
    added_cpu_us_per_req: float | None = None
    spans_sent: float = 0.0
    spans_received: int = 0
    spans_lost: int | None = None
    logs_sent: float = 0.0
    logs_received: int = 0
    logs_lost: int | None = None
    prom_series: int | None = None
    errors: list[str] = field(default_factory=list)


def _median(values: Iterable[float]) -> float | None:
    """Median, or None for no values."""
    items = list(values)
    return statistics.median(items) if items else None


def _lost(sent: float, received: int, exact: bool) -> int | None:
    """Records lost (sent but never received), when the sent count is exact (no sampling)."""
    return max(0, round(sent) - received) if exact else None


def summarize(
    name: str, description: str, ratio: float, runs: Sequence[RunResult], bare: Sequence[RunResult]
) -> Summary:
    """Fold one configuration's runs (and bare's of the same rounds) into a Summary."""
    ok = [r for r in runs if r.ok]
    summary = Summary(name, description, ratio, len(ok), errors=[r.error for r in runs if r.error])
    if not ok:
        return summary
    bare_by_round = {r.round: r for r in bare if r.ok}
    paired = [(r, bare_by_round[r.round]) for r in ok if r.round in bare_by_round]
    summary.rps = statistics.median(r.rps for r in ok)
    summary.ratio = _median(r.rps / b.rps for r, b in paired if b.rps)
    summary.p50_ms = statistics.median(r.p50_ms for r in ok)
    summary.p99_ms = statistics.median(r.p99_ms for r in ok)
    summary.peak_rss_mib = max(r.peak_rss_mib for r in ok)
    summary.cpu_us_per_req = statistics.median(r.cpu_us_per_req for r in ok)
    summary.added_cpu_us_per_req = _median(r.cpu_us_per_req - b.cpu_us_per_req for r, b in paired)
    summary.spans_sent = sum(r.spans_sent for r in ok)
    summary.spans_received = sum(r.spans_received for r in ok)
    summary.logs_sent = sum(r.logs_sent for r in ok)
    summary.logs_received = sum(r.logs_received for r in ok)
    summary.spans_lost = _lost(summary.spans_sent, summary.spans_received, ratio >= 1.0)
    summary.logs_lost = _lost(summary.logs_sent, summary.logs_received, True)
    series = [r.prom_series for r in ok if r.prom_series is not None]
    summary.prom_series = max(series) if series else None
    return summary


# --- the table ---------------------------------------------------------------------------------

COLUMNS = (
    ("config", "<23"), ("req/s", ">8"), ("x bare", ">6"), ("p50 ms", ">7"), ("p99 ms", ">7"),
    ("RSS MiB", ">7"), ("CPU us/req", ">10"), ("+CPU us/req", ">11"),
    ("spans sent/recv", ">17"), ("lost", ">5"), ("logs sent/recv", ">15"), ("lost", ">5"),
)  # fmt: skip


def _count(value: float, exact: bool) -> str:
    """A sent count: exact, or '~N' for an expectation under sampling."""
    return f"{round(value)}" if exact else f"~{round(value)}"


def _pair(sent: float, received: int, exact: bool, applies: bool) -> str:
    """'sent/received' or '-' when the signal does not apply."""
    return f"{_count(sent, exact)}/{received}" if applies else "-"


def _opt(value: float | int | None, fmt: str) -> str:
    """Format a number, '-' for None."""
    return "-" if value is None else format(value, fmt)


def row(s: Summary, spans: bool, logs: bool) -> list[str]:
    """The table cells of one summary."""
    return [
        s.config,
        f"{s.rps:.0f}",
        _opt(s.ratio, ".2f"),
        f"{s.p50_ms:.2f}",
        f"{s.p99_ms:.2f}",
        f"{s.peak_rss_mib:.1f}",
        f"{s.cpu_us_per_req:.0f}",
        _opt(s.added_cpu_us_per_req, "+.0f"),
        _pair(s.spans_sent, s.spans_received, s.sampler_ratio >= 1.0, spans),
        _opt(s.spans_lost, "d") if spans else "-",
        _pair(s.logs_sent, s.logs_received, True, logs),
        _opt(s.logs_lost, "d") if logs else "-",
    ]


def _line(cells: Sequence[str]) -> str:
    """One table line."""
    return "  ".join(format(cell, spec) for cell, (_, spec) in zip(cells, COLUMNS, strict=True))


def table(summaries: Sequence[Summary], signals: dict[str, tuple[bool, bool]]) -> list[str]:
    """Header plus one line per configuration that ran (failures are listed separately)."""
    lines = [_line([title for title, _ in COLUMNS])]
    for s in summaries:
        if s.rounds_ok:
            lines.append(_line(row(s, *signals[s.config])))
    return lines


def failures(summaries: Sequence[Summary]) -> list[str]:
    """One line per configuration with failed runs."""
    lines = []
    for s in summaries:
        for error in dict.fromkeys(s.errors):  # distinct, in order
            flat = " | ".join(line.strip() for line in error.splitlines() if line.strip())
            lines.append(f"{s.config}: {flat}")
    return lines


# --- targets -------------------------------------------------------------------------------------

# (label, aiva config, stock counterpart, minimum ratio to bare, zero loss required)
TARGETS = (
    ("traces+Prometheus", "aiva_traces_prom", "stock_traces_prom", 0.20, False),
    ("full", FULL, "stock_full", 0.15, True),
    ("full at ratio 0.1", "aiva_full_01", "stock_full_01", 0.30, False),
)


def _verdict(s: Summary | None, minimum: float, lossless: bool) -> str:
    """'0.23x met' / '... NOT met' / 'not run' / 'failed'."""
    if s is None:
        return "not run"
    if not s.rounds_ok or s.ratio is None:
        return "failed"
    met = s.ratio >= minimum
    text = f"{s.ratio:.2f}x"
    if lossless:
        met = met and s.spans_lost == 0 and s.logs_lost == 0
        text += f", lost spans {s.spans_lost} logs {s.logs_lost}"
    return f"{text}: {'met' if met else 'NOT met'}"


def targets(by_name: dict[str, Summary]) -> list[str]:
    """One line per target: aiva's verdict, with the stock counterpart for comparison."""
    lines = []
    for label, aiva, stock, minimum, lossless in TARGETS:
        loss = " with zero spans and log records lost" if lossless else ""
        lines.append(
            f"target {label} >= {minimum:.2f}x{loss}: {aiva} "
            f"{_verdict(by_name.get(aiva), minimum, lossless)}"
            f"  (stock: {stock} {_verdict(by_name.get(stock), minimum, lossless)})"
        )
    return lines


def last_line(by_name: dict[str, Summary]) -> str:
    """The required last line: aiva's full pipeline (traces at 1.0) ratio to bare."""
    full = by_name.get(FULL)
    if full is None:
        return f"full pipeline ratio: n/a ({FULL} not selected)"
    if full.ratio is None:
        return f"full pipeline ratio: n/a ({FULL} failed)"
    return f"full pipeline ratio: {full.ratio:.2f}"
