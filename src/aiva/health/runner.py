"""The health runner: every check concurrently, in the background, into one snapshot.

Probes read the snapshot and nothing else, so a probe storm never reaches a
dependency; each round is a `health.evaluate` span with a child a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Status as SpanStatus
from opentelemetry.trace import StatusCode

from aiva.health.model import CheckResult, Outcome, Probe, Status, aggregate
from aiva.health.types import AsyncCheckFunction, CheckFunction, CheckSpec
from aiva.settings.masking import mask_text
from aiva.settings.model import HealthSettings

logger = logging.getLogger(__name__)


# Checks and their latest results, replaced together in one assignment, so a reader
# on another thread (the gauge callbacks) never sees a half-updated pair.
_Snapshot = tuple[tuple[CheckSpec, ...], Mapping[str, CheckResult]]


def _not_evaluated(spec: CheckSpec) -> CheckResult:
    return CheckResult(
        spec.name,
        Status.UNKNOWN,
        spec.critical,
        "not evaluated yet",
        0.0,
        None,
        component_type=spec.component_type,
        measurement=spec.measurement,
    )


class HealthRunner:
    """Owns the checks and their latest results; `run` is the background loop."""

    def __init__(
        self,
        checks: Sequence[CheckSpec],
        settings: HealthSettings,
        tracer: trace.Tracer,
        histogram: object | None = None,
    ) -> None:
        self._settings = settings
        self._tracer = tracer
        self._histogram = histogram
        specs = tuple(checks)
        self._snapshot: _Snapshot = (specs, {c.name: _not_evaluated(c) for c in specs})
        self.rounds = 0
        self.draining = False
        self._evaluated_at: float | None = None

    @property
    def checks(self) -> tuple[CheckSpec, ...]:
        return self._snapshot[0]

    def configure(self, settings: HealthSettings, checks: Sequence[CheckSpec]) -> None:
        """New intervals, timeouts and checks take effect from the next round (hot reload)."""
        self._settings = settings
        specs = tuple(checks)
        previous = self._snapshot[1]
        self._snapshot = (specs, {c.name: previous.get(c.name) or _not_evaluated(c) for c in specs})

    @property
    def started(self) -> bool:
        """The first round has finished."""
        return self.rounds > 0

    async def run(self) -> None:
        """Evaluate now, then a round every health.interval_s from the previous round's
        start (so a hung dependency shows within interval + timeout), until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.evaluate()
            except Exception:  # the round boundary: one bad round must not end the loop
                logger.exception("health round failed; the next round runs on schedule")
            await asyncio.sleep(max(0.0, started + self._settings.interval_s - loop.time()))

    async def evaluate(self) -> list[CheckResult]:
        """One round: every check at once, each within its own timeout."""
        with self._tracer.start_as_current_span(
            "health.evaluate",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            # Both would write the raw exception message; a failed round is logged by run().
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            results = await asyncio.gather(*(self._run_one(c) for c in self.checks))
            overall = aggregate(results)
            span.set_attribute("health.status", overall.value)
            if overall is Status.UNHEALTHY:
                span.set_status(SpanStatus(StatusCode.ERROR, "unhealthy"))
        # configure() may have swapped the checks during the round: keep only the results
        # of checks still configured, and publish checks and results in one assignment.
        checks, previous = self._snapshot
        latest = dict(previous)
        for result in results:
            before = latest.get(result.name)
            if before is None:
                continue  # removed while the round ran
            self._note_change(before, result)
            latest[result.name] = result
        self._snapshot = (checks, latest)
        self._evaluated_at = time.monotonic()
        self.rounds += 1
        return list(results)

    async def _run_one(self, spec: CheckSpec) -> CheckResult:
        with self._tracer.start_as_current_span(
            f"health.check {spec.name}",
            attributes={"health.check.name": spec.name, "health.check.critical": spec.critical},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            outcome = await self._outcome(spec, span)
            seconds = time.perf_counter() - started
            span.set_attribute("health.check.status", outcome.status.value)
            if outcome.status is Status.UNHEALTHY:
                span.set_status(SpanStatus(StatusCode.ERROR, outcome.message))
        if self._histogram is not None:
            self._histogram.record(seconds, {"check": spec.name})  # type: ignore[attr-defined]
        return CheckResult(
            spec.name,
            outcome.status,
            spec.critical,
            outcome.message,
            seconds * 1000,
            datetime.now(UTC),
            outcome.details,
            outcome.observed_value,
            outcome.observed_unit,
            spec.component_type,
            spec.measurement,
        )

    async def _outcome(self, spec: CheckSpec, span: trace.Span) -> Outcome:
        """The one place an exception or a timeout becomes an unhealthy result.

        Only Exception is caught: cancellation (shutdown) must pass through.
        """
        try:
            # No client spans for the check's own PostgreSQL, Redis or HTTP calls: a probe
            # every few seconds would flood the trace backend, and the `health.check` span
            # already carries each call's duration and outcome. The flag lives in the
            # context, which reaches a plain check's worker thread too (see as_async).
            with suppress_instrumentation():
                async with asyncio.timeout(spec.timeout_s):
                    value = await spec.run()
        except TimeoutError:
            message = f"timed out after {spec.timeout_s:g}s"
            span.add_event(
                "exception",
                {
                    "exception.type": "TimeoutError",
                    "exception.message": message,
                    "health.check.timeout_s": spec.timeout_s,
                },
            )
            return Outcome(Status.UNHEALTHY, message)
        except Exception as error:  # noqa: BLE001 - the check boundary: recorded on the span
            _record_exception(span, error)
            return Outcome(Status.UNHEALTHY, describe(error))
        if isinstance(value, bool):
            return Outcome(
                Status.HEALTHY if value else Status.UNHEALTHY, "ok" if value else "failed"
            )
        if isinstance(value, Outcome):
            # A check's own words reach responses, logs and spans: mask them like errors.
            return dataclasses.replace(
                value, message=mask_text(value.message), details=_masked(value.details)
            )
        return Outcome(Status.UNHEALTHY, f"check returned {type(value).__name__}, not an Outcome")

    def _note_change(self, before: CheckResult, after: CheckResult) -> None:
        if before.status is after.status:
            return
        if before.timestamp is None and after.status is Status.HEALTHY:
            return  # the first evaluation of a healthy check is no news
        level = logging.ERROR if after.status is Status.UNHEALTHY else logging.WARNING
        logger.log(
            level,
            "health check %s is %s (was %s): %s",
            after.name,
            after.status.value,
            before.status.value,
            after.message,
            extra={
                "check": after.name,
                "status": after.status.value,
                "previous": before.status.value,
            },
        )

    # --- reading ---------------------------------------------------------------

    def results(self, probe: Probe | None = None, exclude: Iterable[str] = ()) -> list[CheckResult]:
        """The latest results (of one probe's checks), stale ones reported unknown."""
        skip = set(exclude)
        checks, latest = self._snapshot  # one read: a consistent pair
        chosen = [c for c in checks if (probe is None or probe in c.probes) and c.name not in skip]
        stale = self._stale_for(checks)
        results = []
        for spec in chosen:
            result = latest[spec.name]
            if stale is not None and result.timestamp is not None:
                result = dataclasses.replace(
                    result, status=Status.UNKNOWN, message=f"stale: last evaluated {stale:.0f}s ago"
                )
            results.append(result)
        return results

    def status(self, probe: Probe | None = None, exclude: Iterable[str] = ()) -> Status:
        return aggregate(self.results(probe, exclude))

    def _stale_for(self, checks: Sequence[CheckSpec]) -> float | None:
        """Seconds since the last round when that is longer than the cache may serve."""
        if self._evaluated_at is None:
            return None
        age = time.monotonic() - self._evaluated_at
        longest = max((c.timeout_s for c in checks), default=0.0)
        limit = self._settings.cache_ttl_s + self._settings.interval_s + longest
        return age if age > limit else None


def as_async(func: CheckFunction) -> AsyncCheckFunction:
    """The check as the runner awaits it: an async one as it is, a plain one in a thread.

    A plain function may block (a driver's sync call, a file read), so it runs in a
    thread of its own under the same timeout. On timeout the thread is abandoned, not
    killed (Python cannot stop a thread): the call runs on and its result is dropped.
    Until it returns, the check reports unhealthy without starting another call, so a
    hung dependency holds one thread, not one more each round.
    """
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects count too
    ):
        return cast(AsyncCheckFunction, func)
    busy = threading.Event()

    def call() -> object:
        busy.set()
        try:
            return func()
        finally:
            busy.clear()

    async def run() -> Outcome | bool:
        if busy.is_set():
            return Outcome.unhealthy("previous call still running after its timeout")
        value = await _in_daemon_thread(call)
        if inspect.isawaitable(value):  # `lambda: ping(db)` hands back a coroutine to await
            value = await value
        return cast("Outcome | bool", value)

    return run


async def _in_daemon_thread(call: Callable[[], object]) -> object:
    """`call()` in a new daemon thread, in a copy of this task's context (so the runner's
    suppress_instrumentation holds there too); a cancelled wait returns at once.

    By hand rather than anyio.to_thread: anyio's worker threads are not daemons, and the
    interpreter waits for them at exit: a plain check hung for 3 s (timeout 0.2 s) held
    the process 3.85 s past its end. One thread a call costs ~0.1 ms, once a round.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[object] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: object, error: Exception | None) -> None:
        if done.done():  # the wait was cancelled (timed out) meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(value)

    def work() -> None:
        try:
            value, error = context.run(call), None
        except Exception as failure:  # noqa: BLE001 - handed to the awaiting check
            value, error = None, failure
        # A closed loop (shut down while the call hung) has nobody waiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=work, name="aiva-health-check", daemon=True).start()
    return await done


def _masked(details: Mapping[str, Any]) -> Mapping[str, Any]:
    return {k: mask_text(v) if isinstance(v, str) else v for k, v in details.items()}


def describe(error: BaseException) -> str:
    """A one-line message for a failed check, with any password masked."""
    if _refused(error):
        return "connection refused"
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return mask_text(text)


def _record_exception(span: trace.Span, error: Exception) -> None:
    """The SDK's exception event with its message and stacktrace masked: a driver's
    message may quote the DSN it failed to reach. Same masking as the report."""
    stacktrace = "".join(traceback.format_exception(error))
    span.record_exception(
        error,
        attributes={
            "exception.message": mask_text(str(error)),
            "exception.stacktrace": mask_text(stacktrace),
        },
    )


def _refused(error: BaseException | None) -> bool:
    """A refused connection anywhere in the chain (clients wrap the OSError their way)."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == 111:
            return True
        if "Error 111 " in str(error) or "Connect call failed" in str(error):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


async def evaluate_once(
    runner: HealthRunner, probe: Probe | None
) -> tuple[Status, list[CheckResult]]:
    """One round, then the probe's verdict: for `aiva health` in-process."""
    await runner.evaluate()
    results = runner.results(probe)
    return aggregate(results), results
