"""`telemetry`: degraded while the OTLP exporters are failing."""

from __future__ import annotations

from aiva.health.model import Outcome, Status
from aiva.health.types import CheckFunction
from aiva.telemetry.exporters import ExportStats


def telemetry_check(stats: ExportStats, otlp_on: bool) -> CheckFunction:
    async def check() -> Outcome:
        counts = {f"{signal}_{outcome}": n for (signal, outcome), n in stats.counts().items()}
        if not otlp_on:
            return Outcome(Status.HEALTHY, "OTLP export is off", counts)
        failing = stats.failing()
        if failing:
            message = f"OTLP export failing for {', '.join(failing)}"
            return Outcome(Status.DEGRADED, message, counts, float(len(failing)), "signals")
        return Outcome(Status.HEALTHY, "OTLP export ok", counts, 0.0, "signals")

    return check
