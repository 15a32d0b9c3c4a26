"""Validation of the merged settings: dynaconf validators built from the typed model."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dynaconf import Dynaconf, Validator
from dynaconf.validator import ValidationError

from aiva.errors import Problem
from aiva.settings.layers import get_path, join_key, source_of
from aiva.settings.masking import mask_value
from aiva.settings.model import (
    CHECK_COMMON_KEYS,
    CHECK_OPTIONS,
    CheckSettings,
    OptionRule,
    Settings,
)
from aiva.settings.otel_env import installed_propagators

FREE_FORM_SECTIONS = frozenset({"app"})
# Check types whose warn_percent/fail_percent are thresholds on a rising percentage.
_THRESHOLD_CHECKS = frozenset({"disk", "memory", "cpu"})


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule on one dotted key: the text users read and the dynaconf validator enforcing it."""

    key: str
    text: str
    validator: Validator
    shows_value: bool = True


def validate(data: Mapping[str, Any], origins: Mapping[str, str]) -> list[Problem]:
    """Every problem with the merged settings, one per key (the first rule it breaks)."""
    holder = Dynaconf(environments=False, loaders=[])
    holder.update(data)
    problems = list(_unknown_keys(data, origins))
    failed: set[str] = {p.key for p in problems}
    for rule in _rules(data, origins):
        if rule.key in failed or any(rule.key.startswith(k + ".") for k in failed):
            continue
        if _breaks(rule.validator, holder):
            failed.add(rule.key)
            value = repr(mask_value(rule.key, get_path(data, rule.key)))
            problems.append(
                Problem(
                    rule.key,
                    rule.text,
                    source_of(rule.key, origins),
                    value if rule.shows_value else None,
                )
            )
    problems += [p for p in _schemeless_http_endpoints(data, origins) if p.key not in failed]
    # A value derived from a bad key is bad for the same reason: report the key once.
    return [p for p in problems if p.source.removeprefix("derived from ") not in failed]


def _schemeless_http_endpoints(
    data: Mapping[str, Any], origins: Mapping[str, str]
) -> Iterator[Problem]:
    """host:port is a gRPC endpoint only: HTTP/protobuf needs the URL's scheme. Checked
    per signal as it will be exported: its own endpoint and protocol, else the general."""
    general = get_path(data, "telemetry.otlp")
    if not isinstance(general, dict):
        return
    reported: set[str] = set()
    for signal in ("traces", "metrics", "logs"):
        table = general.get(signal)
        own: dict[str, Any] = table if isinstance(table, dict) else {}
        key = (
            f"telemetry.otlp.{signal}.endpoint"
            if own.get("endpoint")
            else "telemetry.otlp.endpoint"
        )
        endpoint = get_path(data, key)
        protocol = own.get("protocol") or general.get("protocol")
        if (
            isinstance(endpoint, str)
            and "://" not in endpoint
            and protocol == "http/protobuf"
            and key not in reported
        ):
            reported.add(key)
            yield Problem(
                key,
                f"must be a URL (http, https): {signal} are sent over http/protobuf",
                source_of(key, origins),
                repr(endpoint),
            )


def _breaks(validator: Validator, holder: Dynaconf) -> bool:
    try:
        validator.validate(holder)
    except ValidationError:
        return True
    return False


# --- unknown keys ---------------------------------------------------------------


def _unknown_keys(data: Mapping[str, Any], origins: Mapping[str, str]) -> Iterator[Problem]:
    for name, value in data.items():
        if name in FREE_FORM_SECTIONS:
            continue
        if name not in Settings.__dataclass_fields__:
            yield _unknown(name, origins)
            continue
        section = _hints(Settings)[name]
        if isinstance(value, dict):
            yield from _unknown_in(section, value, name, origins)


def _unknown_in(
    cls: type, data: Mapping[str, Any], prefix: str, origins: Mapping[str, str]
) -> Iterator[Problem]:
    hints = _hints(cls)
    for name, value in data.items():
        key = f"{prefix}.{name}"
        if name not in hints:
            yield _unknown(key, origins)
        elif key == "health.checks" and isinstance(value, dict):
            for check, spec in value.items():
                if isinstance(spec, dict):
                    yield from _unknown_check_keys(f"{key}.{check}", spec, origins)
        elif dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            yield from _unknown_in(hints[name], value, key, origins)


def _unknown_check_keys(
    prefix: str, spec: Mapping[str, Any], origins: Mapping[str, str]
) -> Iterator[Problem]:
    allowed = CHECK_COMMON_KEYS | set(CHECK_OPTIONS.get(str(spec.get("type")), {}))
    for name in spec:
        if name not in allowed:
            yield _unknown(f"{prefix}.{name}", origins)


def _unknown(key: str, origins: Mapping[str, str]) -> Problem:
    return Problem(key, "is not a known setting (a typo?)", source_of(key, origins))


# --- rules from the model -------------------------------------------------------


def _rules(data: Mapping[str, Any], origins: Mapping[str, str]) -> Iterator[Rule]:
    for name, kind in _hints(Settings).items():
        if name in FREE_FORM_SECTIONS:
            continue
        yield from _rules_for(name, kind, {}, data, origins)


def _rules_for(
    key: str,
    kind: Any,
    constraints: Mapping[str, Any],
    data: Any,
    origins: Mapping[str, str],
) -> Iterator[Rule]:
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        yield _rule(key, "must be a table of settings", lambda v: isinstance(v, dict))
        if key == "health":
            yield from _check_rules(data, origins)
        for f in dataclasses.fields(kind):
            if key == "health" and f.name == "checks":
                continue
            hint = _hints(kind)[f.name]
            yield from _rules_for(f"{key}.{f.name}", hint, f.metadata, data, origins)
        return
    text, test = _type_rule(kind)
    yield _rule(key, text, test)
    if get_path(data, key) is not None:
        yield from _constraint_rules(key, constraints)
    if constraints.get("boundaries"):
        yield from _boundary_rules(key, get_path(data, key))


def _check_rules(data: Mapping[str, Any], origins: Mapping[str, str]) -> Iterator[Rule]:
    checks = get_path(data, "health.checks")
    yield _rule("health.checks", "must be a table of checks", lambda v: isinstance(v, dict))
    if not isinstance(checks, dict):
        return
    hints = _hints(CheckSettings)
    fields = {f.name: f for f in dataclasses.fields(CheckSettings)}
    for name, spec in checks.items():
        prefix = f"health.checks.{name}"
        yield _rule(prefix, "must be a table", lambda v: isinstance(v, dict))
        if not isinstance(spec, dict):
            continue
        yield Rule(
            f"{prefix}.type", "is required", Validator(f"{prefix}.type", must_exist=True), False
        )
        for common in sorted(CHECK_COMMON_KEYS & set(spec)):
            yield from _rules_for(
                f"{prefix}.{common}", hints[common], fields[common].metadata, data, origins
            )
        options = CHECK_OPTIONS.get(str(spec.get("type")), {})
        for option, option_rule in options.items():
            yield from _option_rules(f"{prefix}.{option}", option_rule, spec.get(option))
        if spec.get("type") in _THRESHOLD_CHECKS:
            yield from _threshold_rule(prefix, spec, origins)


def _threshold_rule(
    prefix: str, spec: Mapping[str, Any], origins: Mapping[str, str]
) -> Iterator[Rule]:
    """warn_percent <= fail_percent, reported on the one set last (the likely edit)."""
    warn, fail = spec.get("warn_percent"), spec.get("fail_percent")
    if not (_is_number(warn) and _is_number(fail)):
        return  # unset (the check's own default applies) or reported by the type rules
    # Origins are in the order the layers set them (see layers.merge).
    keys = (f"{prefix}.warn_percent", f"{prefix}.fail_percent")
    order = [k for k in origins if k in keys]
    later_layer = origins.get(keys[1]) != origins.get(keys[0])
    if order and order[-1] == keys[1] and later_layer:
        yield _rule(
            f"{prefix}.fail_percent", f"must be at least warn_percent ({warn})", lambda v: v >= warn
        )
    else:
        yield _rule(
            f"{prefix}.warn_percent", f"must not exceed fail_percent ({fail})", lambda v: v <= fail
        )


def _option_rules(key: str, option: OptionRule, value: Any) -> Iterator[Rule]:
    if option.required:
        yield Rule(key, "is required for this check type", Validator(key, must_exist=True), False)
    if value is None:
        return
    text, test = _type_rule(option.kind)
    yield _rule(key, text, test)
    yield from _constraint_rules(key, option.constraints)


def _constraint_rules(key: str, constraints: Mapping[str, Any]) -> Iterator[Rule]:
    low, high = constraints.get("ge"), constraints.get("le")
    if low is not None and high is not None:
        yield Rule(key, f"must be between {low} and {high}", Validator(key, gte=low, lte=high))
    elif low is not None:
        yield Rule(key, f"must be at least {low}", Validator(key, gte=low))
    if constraints.get("gt") is not None:
        yield Rule(
            key, f"must be greater than {constraints['gt']}", Validator(key, gt=constraints["gt"])
        )
    if constraints.get("nonempty"):
        yield _rule(key, "must not be empty", lambda v: bool(str(v).strip()))
    if constraints.get("path"):
        yield _rule(key, "must be a path starting with /", _all_paths)
    if constraints.get("in_folder"):
        yield _rule(key, "must be a file path in an existing folder", _in_folder)
    schemes = constraints.get("url_schemes")
    if schemes:
        yield _rule(key, f"must be a URL ({', '.join(schemes)})", lambda v: _is_url(v, schemes))
    if constraints.get("readable_file"):
        yield _rule(key, "must be a readable file", _readable_file)
    if constraints.get("otlp_endpoint"):
        yield _rule(key, "must be a URL (http, https), or host:port for gRPC", _is_otlp_endpoint)
    if constraints.get("unique"):
        yield _rule(key, "must not name an entry twice", lambda v: len(set(v)) == len(v))
    if constraints.get("regex"):
        yield _rule(key, "must be a list of regular expressions", _all_patterns)
    if constraints.get("propagators"):
        known = installed_propagators()
        yield _rule(
            key,
            f"must name installed propagators ({', '.join(sorted(known))}; b3/jaeger from "
            "opentelemetry-propagator-*)",
            lambda v: all(name in known for name in v),
        )
    if constraints.get("http_tokens"):
        yield _rule(key, "must be a list of HTTP method names (RFC 9110 tokens)", _all_tokens)
    if constraints.get("rate_limit_key"):
        yield _rule(key, "must be client or header:NAME (NAME a header name)", _is_rate_limit_key)
    if constraints.get("rate_limit_storage"):
        yield _rule(
            key,
            "must be memory or a URL (redis, rediss)",
            lambda v: v == "memory" or _is_url(v, ("redis", "rediss")),
        )
    if constraints.get("rate_limit_groups"):
        yield _rule(
            key,
            'must be a table of path prefix: limit ("/api/login": 5/minute)',
            _are_rate_limit_groups,
        )


# An instrument name as the OpenTelemetry API defines it (the SDK refuses others).
_INSTRUMENT_NAME = re.compile(r"[A-Za-z][-_./A-Za-z0-9]{0,254}")
# The rules on one instrument's bucket boundaries, in the order they are reported. At
# least 0: the SDK's own default list starts at 0, a bucket for zero measurements.
_BOUNDARY_RULES: tuple[tuple[str, Callable[[Any], bool]], ...] = (
    (
        "must be a list of numbers (bucket boundaries)",
        lambda v: isinstance(v, list | tuple) and all(_is_number(b) for b in v),
    ),
    ("must not be empty", bool),
    ("must hold finite numbers only (no nan or inf)", lambda v: all(map(math.isfinite, v))),
    ("must not hold a negative number", lambda v: all(b >= 0 for b in v)),
    ("must be strictly increasing", lambda v: all(a < b for a, b in itertools.pairwise(v))),
)


def _boundary_rules(key: str, table: Any) -> Iterator[Rule]:
    """The rules on each instrument's boundaries, under its own key: an instrument name
    holds dots, so it is quoted (`telemetry.metrics.buckets."aiva.operation.duration"`).

    dynaconf would split such a key at its dots: each validator reads the whole table.
    """
    if not isinstance(table, dict):
        return  # the type rule reports it
    for name in table:
        entry = f"{key}.{join_key([str(name)])}"
        named = bool(_INSTRUMENT_NAME.fullmatch(str(name)))
        yield Rule(
            entry,
            "must be an instrument name (a letter, then letters, digits, _ . - /)",
            Validator(key, condition=lambda _, named=named: named),
            shows_value=False,
        )
        for text, test in _BOUNDARY_RULES:
            yield Rule(entry, text, Validator(key, condition=_safe(_entry_test(name, test))))


def _entry_test(name: Any, test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """`test` on one entry of the table the validator is given."""
    return lambda table: test(table.get(name))


def _rule(key: str, text: str, test: Callable[[Any], bool]) -> Rule:
    # dynaconf calls `condition` with the value; a missing key passes (the model's
    # defaults make every key exist; required check options use must_exist).
    return Rule(key, text, Validator(key, condition=_safe(test)))


def _safe(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def run(value: Any) -> bool:
        try:
            return bool(test(value))
        except (TypeError, ValueError):
            return False

    return run


# --- types ----------------------------------------------------------------------


def _type_rule(kind: Any) -> tuple[str, Callable[[Any], bool]]:
    """The text and test of "the value has this annotated type"."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        text, test = _type_rule(inner)
        return f"{text} or null", lambda v: v is None or test(v)
    if origin in (types.UnionType, typing.Union):
        return _keyword_or_list_rule(args)
    if origin is typing.Literal:
        return f"must be one of {', '.join(map(str, args))}", lambda v: v in args
    if origin is tuple:
        text, test = _type_rule(args[0])
        return (
            f"must be a list ({text.removeprefix('must be ')} each)",
            lambda v: isinstance(v, list | tuple) and all(test(i) for i in v),
        )
    if origin in (Mapping, dict) or kind in (Mapping, dict):
        if args and args[1] is str:
            return (
                "must be a table of strings",
                lambda v: (
                    isinstance(v, dict)
                    and all(isinstance(k, str) and isinstance(i, str) for k, i in v.items())
                ),
            )
        return "must be a table", lambda v: isinstance(v, dict)
    return _SCALARS[kind if isinstance(kind, type) else tuple(kind)]


def _keyword_or_list_rule(args: tuple[Any, ...]) -> tuple[str, Callable[[Any], bool]]:
    """A keyword or a list of names: `Literal["auto"] | tuple[Literal[...], ...]`."""
    (keyword,) = [a for a in args if typing.get_origin(a) is typing.Literal]
    (items,) = [a for a in args if typing.get_origin(a) is tuple]
    words, names = typing.get_args(keyword), typing.get_args(typing.get_args(items)[0])
    return (
        f"must be {' or '.join(words)} or a list of: {', '.join(sorted(names))}",
        lambda v: v in words or (isinstance(v, list | tuple) and all(i in names for i in v)),
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_SCALARS: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    bool: ("must be true or false", lambda v: isinstance(v, bool)),
    int: ("must be a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("must be a number", _is_number),
    (int, float): ("must be a number", _is_number),
    str: ("must be a string", lambda v: isinstance(v, str)),
}


def _is_url(value: Any, schemes: tuple[str, ...]) -> bool:
    parts = urlsplit(str(value))
    if parts.scheme not in schemes:
        return False
    return parts.scheme == "unix" or bool(parts.hostname)


def _in_folder(value: Any) -> bool:
    # Checked at load time so that a bad path is a settings error, not a crash at start-up.
    if value == "":
        return True  # like null: no log file
    path = Path(str(value))
    return path.parent.is_dir() and not path.is_dir()


def _readable_file(value: Any) -> bool:
    # Checked at load time: a missing PEM file is a settings error, not a crash at start-up.
    path = Path(str(value))
    return path.is_file() and os.access(path, os.R_OK)


def _is_otlp_endpoint(value: Any) -> bool:
    if _is_url(value, ("http", "https")):
        return True
    host, _, port = str(value).rpartition(":")
    return bool(host) and "/" not in host and port.isdigit()


def _all_patterns(value: Any) -> bool:
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, TypeError):
            return False
    return True


# RFC 9110's token: what a method name may be made of.
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _all_tokens(value: Any) -> bool:
    return all(isinstance(i, str) and _HTTP_TOKEN.fullmatch(i) for i in value)


def _is_rate_limit_key(value: Any) -> bool:
    kind, _, name = str(value).partition(":")
    return value == "client" or (kind == "header" and bool(_HTTP_TOKEN.fullmatch(name)))


# A group's prefix names its policy in the RateLimit headers (a structured-field string:
# visible ASCII, no quote or backslash).
_GROUP_PREFIX = re.compile(r"/[!#-\[\]-~]*")


def _are_rate_limit_groups(value: Any) -> bool:
    from limits import parse  # the notation the limits library reads

    for prefix, limit in value.items():
        if not _GROUP_PREFIX.fullmatch(prefix) or parse(limit).amount < 1:
            return False
    return True


def _all_paths(value: Any) -> bool:
    items = value if isinstance(value, list | tuple) else [value]
    return all(isinstance(i, str) and i.startswith("/") for i in items)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
