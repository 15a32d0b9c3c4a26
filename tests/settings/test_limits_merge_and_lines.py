"""The layering is linear in the number of keys, and the lines about settings are bounded
(values cut, keys and problems counted past the first few)."""

from __future__ import annotations

import time

from aiva.errors import Problem
from aiva.settings.layers import Layer, Origins, leaves, merge, source_of
from aiva.settings.reload import (
    LISTED,
    SHOWN_CHARS,
    describe_changes,
    describe_problems,
    problem_line,
)

KEYS = 25_000


def layer(data: dict[str, object], source: str) -> Layer:
    return Layer(data, {key: source for key, _ in leaves(data)})


def test_25000_keys_merge_in_well_under_a_second() -> None:
    # The old merge scanned every origin for each key: 84 s for these on the issue's
    # machine (36 s on this one). Linear, it takes some 0.1 s; the bound is generous.
    app = {f"key_{i}": f"value {i}" for i in range(KEYS)}
    layers = [
        layer({"server": {"port": 1}}, "package defaults"),
        layer({"app": app}, "settings.yaml"),
        layer({"app": {"key_7": "local"}}, "settings.local.yaml"),
    ]
    started = time.perf_counter()
    merged = merge(layers)
    took = time.perf_counter() - started
    assert took < 3.0, f"{took:.2f} s"
    assert len(merged.origins) == KEYS + 1
    assert merged.origins["app.key_7"] == "settings.local.yaml"
    assert list(merged.origins)[-1] == "app.key_7"  # the newest setting last
    assert source_of("app", merged.origins) == "settings.local.yaml"


def test_a_table_replaced_by_a_value_takes_its_keys_provenance_with_it() -> None:
    merged = merge(
        [
            layer({"app": {f"k{i}": {"x": i} for i in range(KEYS)}}, "settings.yaml"),
            layer({"app": "flat"}, "environment variable AIVA_APP"),
        ]
    )
    assert dict(merged.origins) == {"app": "environment variable AIVA_APP"}


def test_the_source_of_each_of_many_tables_is_found_without_a_scan() -> None:
    # validate asks for the source of each unknown table: a scan each made 25,000 of
    # them quadratic (minutes).
    origins = Origins((f"server.k{i}.a", "settings.yaml") for i in range(KEYS))
    started = time.perf_counter()
    sources = {source_of(f"server.k{i}", origins) for i in range(KEYS)}
    assert time.perf_counter() - started < 3.0
    assert sources == {"settings.yaml"}


def test_origins_behave_as_a_dict_where_set_by_hand() -> None:
    origins = Origins([("a.b", "one"), ("c", "two")])
    origins["a.b"] = "three"  # keeps its place, as a dict does
    origins["a.d"] = "four"
    assert list(origins.items()) == [("a.b", "three"), ("c", "two"), ("a.d", "four")]
    assert source_of("a", origins) == "four"
    del origins["a.d"]
    assert source_of("a", origins) == "three"


def test_described_changes_cut_values_and_count_the_rest() -> None:
    value = "x" * 1_000_000  # one string, shared by every key
    changed = {f"app.key_{i}": (None, value) for i in range(KEYS)}
    line = describe_changes(changed)
    assert line.count(" -> ") == LISTED
    assert line.endswith(f", ... and {KEYS - LISTED:,} more")
    assert len(line) < LISTED * (3 * SHOWN_CHARS + 10) + 50
    assert "app.key_0: None -> 'xxx" in line


def test_described_changes_cut_big_tables_and_long_keys() -> None:
    value = "v" * 10_000
    table = {f"k{i}": value for i in range(10_000)}
    line = describe_changes({"app.t": ({}, table), "app." + "k" * 10_000: (1, 2)})
    assert len(line) < 2 * (3 * SHOWN_CHARS + 10)
    assert line.startswith("app.t: {} -> {'k0': 'vvv")


def test_described_changes_still_mask_secrets() -> None:
    line = describe_changes({"database.password": ("a" * 1000, "b")})
    assert line == "database.password: '****' -> '****'"


def test_problem_lines_are_bounded() -> None:
    big = Problem(
        "telemetry.traces.sampler_ratio", "must be a number", "settings.yaml", "x" * 10**6
    )
    line = problem_line(big)
    assert len(line) < 2 * SHOWN_CHARS + 100
    assert line.startswith("telemetry.traces.sampler_ratio: must be a number, got xxx")
    assert line.endswith("... (from settings.yaml)")
    problems = [
        Problem(f"server.k{i}", "is not a known setting", "settings.yaml") for i in range(999)
    ]
    text = describe_problems(problems, len(problems))
    assert text.count("is not a known setting") == LISTED
    assert text.endswith(f"; ... and {999 - LISTED:,} more")
