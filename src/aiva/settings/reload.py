"""Hot reload: what changed between two settings, which changes apply live, and the bounded
lines that tell."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiva.errors import Problem
from aiva.settings.build import to_dict
from aiva.settings.layers import leaves
from aiva.settings.masking import mask_value
from aiva.settings.model import Settings

# Keys a running service applies without a restart (a prefix covers what lies under it).
LIVE_KEYS = ("telemetry.logs.level", "telemetry.traces.sampler_ratio", "health.")


def changes(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs: {key: (old, new)}."""
    before, after = dict(leaves(to_dict(old))), dict(leaves(to_dict(new)))
    return {
        key: (before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def is_live(key: str) -> bool:
    return any(key == live or (live.endswith(".") and key.startswith(live)) for live in LIVE_KEYS)


# A log line about settings stays short whatever a file holds (a reload of a 50 MB file
# logged a 50 MB line): a key or value is cut at SHOWN_CHARS characters, a list of keys or
# problems at LISTED and counted.
SHOWN_CHARS = 200
LISTED = 10


def _short_repr() -> reprlib.Repr:
    # reprlib: a repr that stops early, so a 1 MiB value costs no 1 MiB of text to cut.
    short = reprlib.Repr()
    short.maxstring = short.maxother = SHOWN_CHARS
    short.maxlist = short.maxtuple = short.maxdict = short.maxset = 5
    return short


_SHORT = _short_repr()


def cut(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text`, or its start and `...` where it is longer than `limit`."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(key: str, value: Any) -> str:
    """A value as a settings log line shows it: masked, repr'd, at most SHOWN_CHARS long."""
    return cut(_SHORT.repr(mask_value(key, value)))


def _listed(items: Iterable[str], count: int, separator: str = ", ") -> str:
    """The first LISTED of `count` items, and how many more there are."""
    text = separator.join(itertools.islice(items, LISTED))
    return text + (f"{separator}... and {count - LISTED:,} more" if count > LISTED else "")


def describe_changes(changed: Mapping[str, tuple[Any, Any]]) -> str:
    """`key: old -> new` for each change (the first LISTED), secrets masked, values cut."""
    return _listed(
        (
            f"{cut(key)}: {shown(key, old)} -> {shown(key, new)}"
            for key, (old, new) in changed.items()
        ),
        len(changed),
    )


def problem_line(problem: Problem) -> str:
    """A settings problem as one line of bounded length (its key and value cut)."""
    value = None if problem.value is None else cut(problem.value)
    return str(dataclasses.replace(problem, key=cut(problem.key), value=value))


def describe_problems(problems: Iterable[Problem], count: int) -> str:
    """The first LISTED problems, `; `-separated, and how many more there are."""
    return _listed((problem_line(p) for p in problems), count, "; ")


@dataclass(frozen=True)
class Plan:
    """What a reload does, worked out away from the event loop."""

    changed: bool  # any key differs at all
    in_force: Settings | None  # the settings to put in force; None: no live key changed
    digest: str  # of in_force
    applied: str  # the live changes, described
    pending: Mapping[str, Any]  # restart-only keys with a new value not logged yet: the value
    pending_text: str  # those, described


def plan(current: Settings, new: Settings, logged: Mapping[str, Any]) -> Plan:
    """What loading `new` over `current` does; `logged`: the restart-only values already
    logged as pending (a later reload does not repeat the same warning)."""
    changed = changes(current, new)
    live = {k: v for k, v in changed.items() if is_live(k)}
    pending = {k: v for k, v in changed.items() if not is_live(k) and logged.get(k, ...) != v[1]}
    in_force = with_live_keys(current, new) if live else None
    return Plan(
        changed=bool(changed),
        in_force=in_force,
        digest=digest(in_force) if in_force is not None else "",
        applied=describe_changes(live),
        pending={k: new_value for k, (_, new_value) in pending.items()},
        pending_text=describe_changes(pending),
    )


def digest(settings: Settings) -> str:
    """A short hash of the effective settings, to tell two configurations apart.

    Of the masked settings: a hash of the secrets themselves, shown on /info, would let
    anyone test guesses offline. A change of a secret alone leaves the hash as it was.
    """
    masked = {name: mask_value(name, value) for name, value in to_dict(settings).items()}
    text = json.dumps(masked, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_live_keys(current: Settings, new: Settings) -> Settings:
    """`current` with the live keys taken from `new`: what a reload puts in force."""
    telemetry = current.telemetry
    return dataclasses.replace(
        current,
        telemetry=dataclasses.replace(
            telemetry,
            logs=dataclasses.replace(telemetry.logs, level=new.telemetry.logs.level),
            traces=dataclasses.replace(
                telemetry.traces, sampler_ratio=new.telemetry.traces.sampler_ratio
            ),
        ),
        health=new.health,
    )
