"""The configurations benchmarks/overhead runs: servers, their settings and their baselines."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from report import BARE
from serve_switched import DIRECT_CONSOLE, PLAIN_HTTPTOOLS

ITEM_ROUTE = "/api/demo/items/42"  # GET /api/demo/items/{item_id}: served by every app
WORK_ROUTE = "/api/demo/work"  # the reference app's handler with telemetry of its own


@dataclass(frozen=True)
class BenchConfig:
    """One server configuration under test."""

    name: str
    description: str
    factory: str | None = None  # a factory in benchmarks/apps.py; None: `python -m aiva serve`
    # For `aiva serve`: a factory in benchmarks/apps.py that it serves (and so instruments,
    # as `aiva.instrument(app, settings)`); None: aiva's reference app (`create_app`).
    serves: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    sampler_ratio: float = 1.0
    spans_per_request: int = 0  # spans one sampled request of the route creates
    logs_per_request: int = 0  # log records one request sends to OTLP
    prometheus: bool = False
    default: bool = True  # run without --only; the layer_* breakdown runs on --breakdown
    baseline: str = BARE  # `x` and `+CPU us/req` are against this configuration's same-round run
    upstream: bool = False  # its route calls the local upstream (BENCH_UPSTREAM_URL)
    # wrk connections for this configuration (None: --connections). The httpx pair runs
    # one call at a time: with 16 in flight, httpcore's pool bookkeeping alone took an
    # uninstrumented call from 0.6 to 1.2-1.9 ms of CPU, varying more between rounds
    # than the client span costs (per-round client/server ratios of 2.8, -3.0, 0.5).
    connections: int | None = None
    # For `aiva serve`: benchmark-only switches (benchmarks/serve_switched.py) that put
    # back what ran before issue #12 where no setting can; () runs `python -m aiva`.
    switches: tuple[str, ...] = ()
    route: str = ITEM_ROUTE  # what wrk and the readiness probe request


def _stock_env(ratio: float = 1.0) -> dict[str, str]:
    """Standard OTEL_* sampling variables for the stock apps."""
    return {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
    }


def _aiva_env(
    ratio: float = 1.0,
    metrics: bool = False,
    logs: bool = False,
    instrumentation: str = "aiva",
    *,
    telemetry: bool = True,
    access_line: bool | None = None,
) -> dict[str, str]:
    """AIVA_* variables for one aiva configuration (OTLP endpoint and config dir added per run).

    `access_line` (default: as `logs`) sets the level to INFO, so the access line is
    written to the console; `logs` also sends it over OTLP.
    """
    flag = {True: "true", False: "false"}
    info = logs if access_line is None else access_line
    return {
        "AIVA_TELEMETRY__ENABLED": flag[telemetry],
        "AIVA_TELEMETRY__TRACES__ENABLED": "true",
        "AIVA_TELEMETRY__TRACES__SAMPLER_RATIO": str(ratio),
        "AIVA_TELEMETRY__METRICS__ENABLED": flag[metrics],
        "AIVA_TELEMETRY__METRICS__PROMETHEUS__ENABLED": flag[metrics],
        "AIVA_TELEMETRY__LOGS__OTLP": flag[logs],
        # Without the per-request INFO log, INFO would still print one access line a request.
        "AIVA_TELEMETRY__LOGS__LEVEL": "INFO" if info else "WARNING",
        "AIVA_TELEMETRY__INSTRUMENTATION": instrumentation,
    }


# Stock contrib instrumentation makes 3 spans a request: the server span plus an internal
# "http send" span for each of http.response.start and http.response.body.
STOCK_SPANS = 3
FASTAPI_BARE = "fastapi_bare"
HTTPX_OFF = "httpx_call_off"

# The work route (issue #14): GET /api/demo/work of the reference app, whose handler emits
# telemetry of its own: three aiva.operation spans under the server span, INFO lines, and
# histogram points. Counted from the code and checked against rotel (a run's sent/recv):
# 4 spans a request (the server span, demo.work, demo.fetch, demo.compute); 5 log records
# at INFO (three "operation ... finished", "processed N items", the access line; the
# DEBUG lines are below the level); 4 histogram points (three aiva.operation.duration,
# aiva.demo.batch.size) and one counter add, besides the request's own metrics.
# Its baseline is the same route with telemetry off (no-op providers, level WARNING): the
# handler does the same work (the 1 ms sleep, the sum, every operation, log and
# instrument call, answered by no-op providers and the level check).
WORK_OFF = "work_off"
WORK_FULL = "work_full"
WORK_PLAIN = "work_plain"
WORK_SPANS = 4
WORK_LOGS = 5


def _work(
    name: str, description: str, env: dict[str, str], *, logs: int = 0, default: bool = False
) -> BenchConfig:
    """The work route with traces at 1.0 and `env`'s signals, against telemetry off."""
    metrics = env["AIVA_TELEMETRY__METRICS__ENABLED"] == "true"
    return BenchConfig(
        name, description, env=env, route=WORK_ROUTE, baseline=WORK_OFF, default=default,
        spans_per_request=WORK_SPANS, logs_per_request=logs, prometheus=metrics,
    )  # fmt: skip


# In the default run: the work route with telemetry off and under aiva_full's settings. On
# --breakdown-work, one signal at a time in between (each row adds one to the row above).
WORK_CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig(
        WORK_OFF, "the work route, telemetry off (no-op providers, level WARNING)",
        env=_aiva_env(telemetry=False), route=WORK_ROUTE,
    ),
    _work("work_traces", "the work route, + traces at ratio 1.0 (4 spans a request)", _aiva_env()),
    _work("work_traces_metrics", "+ metrics (Prometheus and OTLP)", _aiva_env(metrics=True)),
    _work(
        "work_console", "+ the INFO lines on the console (5 a request)",
        _aiva_env(metrics=True, access_line=True),
    ),
    _work(
        WORK_FULL, "+ the same lines over OTLP: aiva_full's settings",
        _aiva_env(metrics=True, logs=True), logs=WORK_LOGS, default=True,
    ),
    # What the fast layer buys (aiva.fast): work_full's settings on the plain pipeline.
    _work(
        WORK_PLAIN, "work_full with telemetry.fast_path: off (the plain pipeline)",
        {**_aiva_env(metrics=True, logs=True), "AIVA_TELEMETRY__FAST_PATH": "off"},
        logs=WORK_LOGS,
    ),
)  # fmt: skip
WORK_BREAKDOWN = tuple(c.name for c in WORK_CONFIGS)

# Issue #12's protections (--protections), one at a time on a quiet base: aiva's app with
# traces at ratio 0.1 and Prometheus metrics, the access line on the console only (no log
# records over OTLP). On aiva_full_01 (every signal on, each access line also exported)
# the same-code pair's rounds differed by 16 us a request in a quiet run (load 0.2-1.3),
# five times the 3 us target: the exporters' batches landing in one round or the next.
# None of the protections depends on what is exported, except the attribute value limit
# (measured in-process too: benchmarks/attribute_limit_inprocess.py). Each layer adds one
# protection to the row above and is measured against it; the first has them all off.
PROTECTIONS_OFF = "guard_off"
# Off: the switches (serve_switched.py) and the settings below; the next rows turn them on.
_ATTRIBUTES = "AIVA_TELEMETRY__LIMITS__ATTRIBUTE_VALUE_LENGTH"
_GUARDS_OFF = {"AIVA_SERVER__LIMITS__MAX_CONCURRENCY": "@none", _ATTRIBUTES: "@none"}
# On, with a limit no run reaches (wrk makes one client: 127.0.0.1); a one-second window,
# so that every request also drops the oldest entry of the full window, as in steady use.
RATE_LIMIT_ON = {
    "AIVA_SECURITY__RATE_LIMIT__ENABLED": "true",
    "AIVA_SECURITY__RATE_LIMIT__REQUESTS": "1000000",
    "AIVA_SECURITY__RATE_LIMIT__WINDOW_S": "1",
}
_BOTH_SWITCHES = (PLAIN_HTTPTOOLS, DIRECT_CONSOLE)


def _guard(
    name: str, description: str, baseline: str | None, switches: tuple[str, ...], **env: str
) -> BenchConfig:
    """One layer of the protections' breakdown (the quiet base above underneath)."""
    return BenchConfig(
        name, description,
        env={**_aiva_env(0.1, metrics=True, logs=False, access_line=True), **env},
        sampler_ratio=0.1, spans_per_request=1, prometheus=True,
        default=False, baseline=baseline or BARE, switches=switches,
    )  # fmt: skip


# Each row keeps what the rows above it turned on.
PROTECTION_CONFIGS: tuple[BenchConfig, ...] = (
    _guard(
        PROTECTIONS_OFF, "the quiet base with #12's protections off: uvicorn's plain httptools, "
        "no concurrency or attribute limit, console written on the loop, no rate limit",
        None, _BOTH_SWITCHES, **_GUARDS_OFF,
    ),
    _guard(
        "guard_head", "+ aiva's httptools protocol: head size, header count, head timeout",
        PROTECTIONS_OFF, (DIRECT_CONSOLE,), **_GUARDS_OFF,
    ),
    _guard(
        "guard_shedding", "+ server.limits.max_concurrency 1000 (the default)",
        "guard_head", (DIRECT_CONSOLE,), **{_ATTRIBUTES: "@none"},
    ),
    _guard(
        "guard_attributes", "+ telemetry.limits.attribute_value_length 8192 (the default)",
        "guard_shedding", (DIRECT_CONSOLE,),
    ),
    _guard(
        "guard_log_queue", "+ the console through the bounded log queue: the shipped defaults",
        "guard_attributes", (),
    ),
    _guard(
        "guard_rate_limit", "+ the rate limiter on (memory, 1,000,000 a second: never refuses)",
        "guard_log_queue", (), **RATE_LIMIT_ON,
    ),
)  # fmt: skip
PROTECTIONS = tuple(c.name for c in PROTECTION_CONFIGS)

CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig(BARE, "plain Starlette, no OpenTelemetry", factory="bare"),
    BenchConfig(
        "stock_traces", "contrib StarletteInstrumentor + BatchSpanProcessor/OTLP gRPC, ratio 1.0",
        factory="stock_traces", env=_stock_env(), spans_per_request=STOCK_SPANS,
    ),
    BenchConfig(
        "stock_traces_prom", "stock_traces + PrometheusMetricReader",
        factory="stock_traces_prom", env=_stock_env(), spans_per_request=STOCK_SPANS,
        prometheus=True,
    ),
    BenchConfig(
        "stock_full", "stock traces 1.0; metrics Prometheus+OTLP; INFO log/request console+OTLP",
        factory="stock_full", env=_stock_env(), spans_per_request=STOCK_SPANS,
        logs_per_request=1, prometheus=True,
    ),
    BenchConfig(
        "stock_full_01", "stock_full at sampler ratio 0.1",
        factory="stock_full", env=_stock_env(0.1), sampler_ratio=0.1,
        spans_per_request=STOCK_SPANS, logs_per_request=1, prometheus=True,
    ),
    BenchConfig(
        "starlette_lean", "Starlette 1.10 OpenTelemetryMiddleware + BatchSpanProcessor/OTLP gRPC",
        factory="starlette_lean", env=_stock_env(), spans_per_request=1,
    ),
    BenchConfig(
        "aiva_traces", "aiva, traces only, ratio 1.0",
        env=_aiva_env(), spans_per_request=1,
    ),
    BenchConfig(
        "aiva_traces_prom", "aiva, traces 1.0 + metrics (Prometheus; OTLP too, endpoint is set)",
        env=_aiva_env(metrics=True), spans_per_request=1, prometheus=True,
    ),
    BenchConfig(
        "aiva_full", "aiva: traces 1.0; metrics Prometheus+OTLP; INFO log/request console+OTLP",
        env=_aiva_env(metrics=True, logs=True), spans_per_request=1, logs_per_request=1,
        prometheus=True,
    ),
    # The breakdown (--breakdown): aiva_full_01 built up one layer at a time; aiva_full_01
    # is layer_console_01 + the same line as an OTLP log record.
    BenchConfig(
        "layer_app", "aiva's app and middleware, telemetry off, no access line",
        env=_aiva_env(telemetry=False), default=False,
    ),
    BenchConfig(
        "layer_traces_metrics_01", "layer_app + traces at ratio 0.1 + metrics (Prometheus, OTLP)",
        env=_aiva_env(0.1, metrics=True), sampler_ratio=0.1, spans_per_request=1,
        prometheus=True, default=False,
    ),
    BenchConfig(
        "layer_console_01", "layer_traces_metrics_01 + the JSON access line on the console",
        env=_aiva_env(0.1, metrics=True, access_line=True), sampler_ratio=0.1,
        spans_per_request=1, prometheus=True, default=False,
    ),
    BenchConfig(
        "aiva_full_01", "aiva full pipeline at sampler ratio 0.1",
        env=_aiva_env(0.1, metrics=True, logs=True), sampler_ratio=0.1, spans_per_request=1,
        logs_per_request=1, prometheus=True,
    ),
    BenchConfig(
        "aiva_stock_full", "aiva full pipeline with telemetry.instrumentation=stock",
        env=_aiva_env(metrics=True, logs=True, instrumentation="stock"),
        spans_per_request=STOCK_SPANS, logs_per_request=1, prometheus=True,
    ),
    # FastAPI under aiva.instrument against bare FastAPI: one app factory, served by
    # uvicorn bare and by `aiva serve apps:fastapi_app --factory` (which instruments it),
    # with the settings of aiva_traces_prom and aiva_full.
    BenchConfig(
        FASTAPI_BARE, "plain FastAPI, no OpenTelemetry (the FastAPI pair's baseline)",
        factory="fastapi_app",
    ),
    BenchConfig(
        "fastapi_aiva_traces_prom", "FastAPI under aiva.instrument, settings of aiva_traces_prom",
        serves="fastapi_app", env=_aiva_env(metrics=True), spans_per_request=1, prometheus=True,
        baseline=FASTAPI_BARE,
    ),
    BenchConfig(
        "fastapi_aiva_full", "FastAPI under aiva.instrument, settings of aiva_full",
        serves="fastapi_app", env=_aiva_env(metrics=True, logs=True), spans_per_request=1,
        logs_per_request=1, prometheus=True, baseline=FASTAPI_BARE,
    ),
    # One httpx call to the local upstream per request, aiva traces only (as aiva_traces),
    # without and with the httpx client instrumentation: the pair measures a client span.
    BenchConfig(
        HTTPX_OFF, "aiva traces only; the route makes one httpx call; instrumentations: []",
        serves="upstream_call", env={**_aiva_env(), "AIVA_TELEMETRY__INSTRUMENTATIONS": "[]"},
        spans_per_request=1, upstream=True, connections=1,
    ),
    BenchConfig(
        "httpx_call_on", 'httpx_call_off with instrumentations: ["httpx"] (a client span)',
        serves="upstream_call",
        env={**_aiva_env(), "AIVA_TELEMETRY__INSTRUMENTATIONS": '["httpx"]'},
        spans_per_request=2, upstream=True, baseline=HTTPX_OFF, connections=1,
    ),
    *WORK_CONFIGS,
    *PROTECTION_CONFIGS,
)  # fmt: skip
BREAKDOWN = ("layer_app", "layer_traces_metrics_01", "layer_console_01", "aiva_full_01")
BY_NAME = {c.name: c for c in CONFIGS}


def with_baselines(chosen: list[BenchConfig]) -> list[BenchConfig]:
    """chosen plus the baselines they are compared with (bare always), in catalogue order."""
    names = {c.name for c in chosen} | {BARE}
    while missing := {BY_NAME[n].baseline for n in names} - names:
        names |= missing
    return [c for c in CONFIGS if c.name in names]
