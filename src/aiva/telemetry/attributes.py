"""Measurement attributes as the OpenTelemetry SDK takes them: cleaned, then keyed.

The SDK (1.45) cleans a measurement's attributes (`Measurement.__post_init__`: the API's
attribute cleaning, no length limit) and aggregates by a key that tells apart values
Python holds equal (True, 1 and 1.0; a sequence of pairs and a mapping). aiva's lean
instruments (aiva.telemetry.instruments) must put a measurement in the same series and
show the same point attributes, so both steps are written out here from the API's
documented behaviour (the cleaning function itself is private to the API). aiva's lean
spans (aiva.telemetry.spans) clean what is not a plain value with the same function and
the span's length limit.

Both cost a few µs; the instruments run them once per distinct attribute dict and keep
the result under a cheap alias (`AttributeKeys`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

# Distinct attribute dicts (by their items, in order) kept under an alias per instrument:
# enough for any sane label set; beyond it a measurement is keyed afresh (~3 µs) and its
# series is kept as the SDK keeps it (the SDK has no cardinality limit in 1.45).
ALIAS_LIMIT = 2048
_PRIMITIVE = (str, bool, int, float)


class Keyed(NamedTuple):
    """One measurement's attributes: its series key, the point's attributes, and those the
    exemplar filter and reservoir see (None when the measurement had none)."""

    key: Hashable
    point: Mapping[str, Any]
    measured: Mapping[str, Any] | None
    # The value types, for an alias whose values Python could confuse (True, 1, 1.0);
    # None when every value is a str.
    types: tuple[type, ...] | None


def clean(attributes: object) -> dict[str, Any] | None:
    """The attributes the SDK keeps of what was passed (None: none, or not a mapping)."""
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping):
        logger.warning(
            "Invalid type '%s' for attributes. Expected a Mapping or None.", type(attributes)
        )
        return None
    cleaned = clean_value(attributes)
    assert isinstance(cleaned, dict)
    return cleaned


def clean_value(value: Any, max_length: int | None = None) -> Any:
    """An attribute value as the API cleans it: primitives and bytes kept, strings cut at
    `max_length` (None: not cut), sequences as tuples, mappings copied with valid keys,
    anything else as its str (not cut) or None."""
    if value is None or isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, str):
        if max_length is not None and len(value) > max_length:
            logger.warning(
                "String attribute value exceeds max length of %d, truncating.", max_length
            )
            return value[:max_length]
        return value
    if isinstance(value, Sequence):
        return tuple(clean_value(item, max_length) for item in value)
    if isinstance(value, Mapping):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if not key:
                logger.warning(
                    "invalid attribute key `%s`. must be non-empty string. "
                    "Dropping key from attributes.",
                    key,
                )
                continue
            if not isinstance(key, str):
                logger.warning(
                    "Invalid type `%s` for attribute key `%s`, must be a str. Key's "
                    "`__str__/__repr__` method will be called if it exists, otherwise the "
                    "key/value pair will be dropped.",
                    type(key),
                    key,
                )
                if not _has_own_str(key):
                    continue
                key = str(key)
            cleaned[key] = clean_value(item, max_length)
        return cleaned
    logger.warning(
        "Invalid type `%s` for attribute value. Expected one of bool, str, None, bytes, int, "
        "float or a Mapping or Sequence of those types. Value's __str__ method will be "
        "called if it exists, otherwise the value will be replaced with None.",
        type(value),
    )
    return str(value) if _has_own_str(value) else None


def _has_own_str(value: object) -> bool:
    kind = type(value)
    return kind.__str__ is not object.__str__ or kind.__repr__ is not object.__repr__


def series_key(value: Any) -> Hashable:
    """The SDK's aggregation key of cleaned attributes: every value tagged with its type."""
    if value is None or isinstance(value, bool | int | float | bytes | str):
        return (type(value).__name__, value)
    if isinstance(value, Sequence):
        return ("sequence", tuple(series_key(item) for item in value))
    if isinstance(value, Mapping):
        ordered = sorted(value, key=lambda item: item if isinstance(item, str) else str(item))
        return ("mapping", tuple((key, series_key(value[key])) for key in ordered))
    raise TypeError(f"not a cleaned attribute value: {type(value)}")


def keyed(attributes: object) -> Keyed:
    """A measurement's attributes cleaned and keyed, as the SDK does (the slow way)."""
    measured = clean(attributes)
    point: dict[str, Any] = dict(measured) if measured else {}
    return Keyed(series_key(point), point, measured or None, None)


class AttributeKeys:
    """`keyed` for each distinct attribute dict, remembered under the tuple of its items
    (the dict a handler builds for each call has the same items in the same order).

    Not locked: a lost race computes the same entry twice.
    """

    __slots__ = ("_aliases",)

    def __init__(self) -> None:
        self._aliases: dict[tuple[tuple[Any, Any], ...], Keyed] = {}

    def of(self, attributes: object) -> Keyed:
        if not attributes:
            empty = attributes is None or isinstance(attributes, Mapping)
            return _EMPTY if empty else keyed(attributes)
        if type(attributes) is not dict:
            return keyed(attributes)
        alias = tuple(attributes.items())
        try:
            entry = self._aliases.get(alias)
        except TypeError:  # an unhashable value (a list): keyed each time
            return keyed(attributes)
        if entry is not None and (
            entry.types is None or entry.types == tuple(map(type, attributes.values()))
        ):
            return entry
        entry = keyed(attributes)
        if all(isinstance(key, str) and key for key in attributes) and all(
            type(value) in _PRIMITIVE for value in attributes.values()
        ):
            types = tuple(map(type, attributes.values()))
            entry = entry._replace(types=None if all(t is str for t in types) else types)
            if len(self._aliases) < ALIAS_LIMIT:
                self._aliases[alias] = entry
        return entry


_EMPTY = Keyed(series_key({}), {}, None, None)
