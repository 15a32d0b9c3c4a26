"""Every standard variable the installed OpenTelemetry packages define is honoured by aiva
(a settings key of layer 5) or named as unsupported (one start-up WARNING): none is
silently ignored. The names are read from the packages, not copied."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from aiva.settings import load_settings
from aiva.settings.otel_env import OTEL_VARIABLES, UNSUPPORTED_OTEL_VARIABLES

# Where the SDK, the API and the contrib packages aiva depends on define their variables.
VARIABLE_MODULES = (
    "opentelemetry.environment_variables",
    "opentelemetry.sdk.environment_variables",
    "opentelemetry.instrumentation.environment_variables",
    "opentelemetry.instrumentation.logging.environment_variables",
    "opentelemetry.instrumentation.system_metrics.environment_variables",
)
# opentelemetry-util-http and the semantic-conventions switch name theirs inline.
INLINE_VARIABLE_MODULES = ("opentelemetry.util.http", "opentelemetry.instrumentation._semconv")


def _defined(module: ModuleType) -> set[str]:
    """The variables a module names: its string constants' values (some constants are
    private, `_OTEL_PYTHON_..._CREDENTIAL_PROVIDER`, while the variable is not)."""
    return {
        value
        for name, value in vars(module).items()
        if "OTEL_" in name and isinstance(value, str) and re.fullmatch(r"OTEL_[A-Z0-9_]+", value)
    }


def _inline(module: ModuleType) -> set[str]:
    source = importlib.util.find_spec(module.__name__)
    assert source is not None and source.origin is not None
    text = Path(source.origin).read_text(encoding="utf-8")
    return set(re.findall(r'"(OTEL_[A-Z_]+)"', text))


def standard_variables() -> set[str]:
    names: set[str] = set()
    for name in VARIABLE_MODULES:
        names |= _defined(importlib.import_module(name))
    for name in INLINE_VARIABLE_MODULES:
        names |= _inline(importlib.import_module(name))
    return names


def test_the_packages_define_the_variables_we_read() -> None:
    # Guards the reading itself: an empty set would make the next test pass vacuously.
    names = standard_variables()
    assert {"OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_BSP_MAX_QUEUE_SIZE",
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"} <= names  # fmt: skip
    assert len(names) > 80


def test_every_standard_variable_is_honoured_or_named_unsupported() -> None:
    known = set(OTEL_VARIABLES) | set(UNSUPPORTED_OTEL_VARIABLES)
    assert sorted(standard_variables() - known) == []


def test_no_variable_is_both() -> None:
    assert set(OTEL_VARIABLES) & set(UNSUPPORTED_OTEL_VARIABLES) == set()


@pytest.mark.parametrize("variable", sorted(OTEL_VARIABLES))
def test_each_honoured_variable_sets_its_keys_named_by_source(variable: str) -> None:
    """A plausible value of each variable lands in its keys, and `config show --sources`
    names the variable."""
    loaded = load_settings({variable: _plausible(variable)}, config_dir="/nonexistent")
    for key in OTEL_VARIABLES[variable].keys:
        sources = {k: v for k, v in loaded.sources.items() if k == key or k.startswith(key + ".")}
        assert sources, key
        assert set(sources.values()) == {f"environment variable {variable}"}


def _plausible(variable: str) -> str:
    if variable.endswith(("_ENDPOINT",)):
        return "http://127.0.0.1:4318/v1/traces" if "_OTLP_" in variable else "x"
    samples = {
        "OTEL_SDK_DISABLED": "true",
        "OTEL_SERVICE_NAME": "svc",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.pod.name=p",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_PROPAGATORS": "b3multi",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "otlp,prometheus",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta",
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION": (
            "base2_exponential_bucket_histogram"
        ),
        "OTEL_METRICS_EXEMPLAR_FILTER": "trace_based",
        "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET,PROPFIND",
    }
    if variable in samples:
        return samples[variable]
    suffixes = {
        "_PROTOCOL": "http/protobuf",
        "_HEADERS": "a=b",
        "_COMPRESSION": "gzip",
        "_CERTIFICATE": __file__,  # a readable file
        "_CLIENT_KEY": __file__,
        "_INSECURE": "true",
        "_EXCLUDED_URLS": "health,ping",
    }
    for suffix, value in suffixes.items():
        if variable.endswith(suffix):
            return value
    return "250"  # milliseconds, sizes and limits


def test_the_readme_table_names_every_variable() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [v for v in [*OTEL_VARIABLES, *UNSUPPORTED_OTEL_VARIABLES] if f"`{v}`" not in readme]
    assert missing == []


def test_config_show_sources_names_the_variable(tmp_path: Path) -> None:
    """What a user runs to see where a value came from: `aiva config show --sources`."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AIVA_"))} | {
        "AIVA_CONFIG_DIR": str(tmp_path),
        "OTEL_TRACES_SAMPLER": "always_off",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://collector:4318/v1/logs",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "aiva", "config", "show", "--sources"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert (
        "telemetry.traces.sampler = always_off    # environment variable OTEL_TRACES_SAMPLER"
        in shown
    )
    assert (
        "telemetry.traces.batch.schedule_delay_s = 0.25    "
        "# environment variable OTEL_BSP_SCHEDULE_DELAY"
    ) in shown
    assert (
        "telemetry.otlp.logs.endpoint = http://collector:4318/v1/logs    "
        "# environment variable OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"
    ) in shown


@pytest.mark.parametrize("variable", sorted(OTEL_VARIABLES))
def test_an_empty_variable_means_unset(variable: str) -> None:
    """The specification: empty is the same as unset (Helm charts write `value: ""`)."""
    empty = load_settings({variable: "  "}, config_dir="/nonexistent")
    unset = load_settings({}, config_dir="/nonexistent")
    assert empty.settings == unset.settings
    assert f"environment variable {variable}" not in empty.sources.values()


def test_start_up_notices_name_what_needs_a_second_look() -> None:
    loaded = load_settings(
        {
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
            "OTEL_PYTHON_ID_GENERATOR": "xray",
        },
        config_dir="/nonexistent",
    )
    [unsupported, unit, metrics] = loaded.notices
    assert unsupported.startswith("standard variables not supported by aiva as settings: ")
    assert "OTEL_PYTHON_ID_GENERATOR (aiva uses the SDK's random id generator)" in unsupported
    assert unit.startswith("OTEL_EXPORTER_OTLP_TIMEOUT=10 is 10 ms")
    assert metrics.startswith("OTEL_METRICS_EXPORTER=otlp leaves out prometheus: /metrics is off")
    assert (
        load_settings({"OTEL_METRICS_EXPORTER": "otlp,prometheus"}, config_dir="/x").notices == ()
    )
