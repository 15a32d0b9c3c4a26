"""Typed errors raised below the CLI; the CLI maps them to exit codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the settings: the key, its (masked) value, the rule and the layer."""

    key: str
    rule: str
    source: str
    value: str | None = None

    def __str__(self) -> str:
        got = f", got {self.value}" if self.value is not None else ""
        return f"{self.key}: {self.rule}{got} (from {self.source})"


class AivaError(Exception):
    """Base of aiva's own errors."""


class SettingsError(AivaError):
    """The settings are invalid; carries every problem found, one line each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InstrumentationError(AivaError):
    """An application cannot be instrumented as asked (a path both serve, twice, too late)."""


class AppLoadError(AivaError):
    """`aiva serve TARGET` cannot load the app TARGET names."""
