"""Plug points: what a health check is, for built-in and custom checks alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiva.health.model import Outcome, Probe

# A check function: no arguments, returns an Outcome (or True/False for healthy/unhealthy).
# Async, or plain: the runner calls a plain one in a worker thread (see runner.as_async).
CheckFunction = Callable[[], "Awaitable[Outcome | bool] | Outcome | bool"]
# What the runner awaits: every check once registered.
AsyncCheckFunction = Callable[[], Awaitable["Outcome | bool"]]


@dataclass(frozen=True)
class CheckSpec:
    """A check as the runner runs it: its function and how its result counts."""

    name: str
    run: AsyncCheckFunction
    critical: bool
    probes: tuple[Probe, ...]
    timeout_s: float
    component_type: str = "component"
    measurement: str = "status"
