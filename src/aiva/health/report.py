"""The health report bodies: aiva's JSON and the IETF `application/health+json` form."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiva.health.model import IETF_STATUS, CheckResult, Status


def report(
    results: Sequence[CheckResult], status: Status, version: str, uptime_s: float, details: bool
) -> dict[str, Any]:
    return {
        "status": status.value,
        "timestamp": datetime.now(UTC).isoformat(),
        "uptime_seconds": round(uptime_s, 3),
        "version": version,
        "checks": [r.as_json(with_details=details) for r in results],
    }


def ietf_report(
    results: Sequence[CheckResult], status: Status, version: str, service: str, details: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": IETF_STATUS[status], "version": version, "serviceId": service}
    if not details:
        return body
    checks: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        checks.setdefault(f"{r.name}:{r.measurement}", []).append(
            {
                "componentType": r.component_type,
                "observedValue": r.observed_value,
                "observedUnit": r.observed_unit,
                "status": IETF_STATUS[r.status],
                "time": r.timestamp.isoformat() if r.timestamp else None,
                "output": "" if r.status is Status.HEALTHY else r.message,
            }
        )
    body["checks"] = checks
    return body
