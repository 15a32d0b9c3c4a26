"""The health model: statuses, immutable results, the one aggregation and the HTTP mapping."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Probe = Literal["live", "ready", "startup"]


class Status(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Outcome:
    """What a check function returns: its status, a message, details and one observed value."""

    status: Status
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    observed_value: float | None = None
    observed_unit: str | None = None

    @classmethod
    def healthy(cls, message: str = "ok", **details: Any) -> Outcome:
        return cls(Status.HEALTHY, message, details)

    @classmethod
    def unhealthy(cls, message: str, **details: Any) -> Outcome:
        return cls(Status.UNHEALTHY, message, details)

    @classmethod
    def degraded(cls, message: str, **details: Any) -> Outcome:
        return cls(Status.DEGRADED, message, details)


@dataclass(frozen=True)
class CheckResult:
    """One check's latest evaluation."""

    name: str
    status: Status
    critical: bool
    message: str
    duration_ms: float
    timestamp: datetime | None
    details: Mapping[str, Any] = field(default_factory=dict)
    observed_value: float | None = None
    observed_unit: str | None = None
    component_type: str = "component"
    measurement: str = "status"

    def as_json(self, with_details: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "status": self.status.value,
            "critical": self.critical,
            "message": self.message,
            "duration_ms": round(self.duration_ms, 3),
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
        }
        if with_details:
            body["details"] = dict(self.details)
        return body


def aggregate(results: Iterable[CheckResult]) -> Status:
    """The contract's order: any critical unhealthy → unhealthy; else any unhealthy or
    degraded → degraded; else any unknown → unknown; else (and with no checks) healthy."""
    results = list(results)
    if any(r.status is Status.UNHEALTHY and r.critical for r in results):
        return Status.UNHEALTHY
    if any(r.status in (Status.UNHEALTHY, Status.DEGRADED) for r in results):
        return Status.DEGRADED
    if any(r.status is Status.UNKNOWN for r in results):
        return Status.UNKNOWN
    return Status.HEALTHY


def http_status(status: Status) -> int:
    """200 when healthy or degraded, 503 when unhealthy or unknown."""
    return 200 if status in (Status.HEALTHY, Status.DEGRADED) else 503


# The IETF health-check draft's words for our statuses.
IETF_STATUS = {
    Status.HEALTHY: "pass",
    Status.DEGRADED: "warn",
    Status.UNHEALTHY: "fail",
    Status.UNKNOWN: "fail",
}
