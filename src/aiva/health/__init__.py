"""Health checks that are telemetry: model, checks, runner, instruments."""

from aiva.health.model import CheckResult, Outcome, Status
from aiva.health.registry import CustomCheck, check

__all__ = ["CheckResult", "CustomCheck", "Outcome", "Status", "check"]
