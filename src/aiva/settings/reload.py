"""Hot reload: what changed between two settings, and which changes apply live."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

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


def describe_changes(changed: Mapping[str, tuple[Any, Any]]) -> str:
    """`key: old -> new` for each change, secrets masked."""
    return ", ".join(
        f"{key}: {mask_value(key, old)!r} -> {mask_value(key, new)!r}"
        for key, (old, new) in changed.items()
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
