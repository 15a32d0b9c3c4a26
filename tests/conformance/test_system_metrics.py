"""aiva's process and system metrics, as a real `aiva serve` exports them over OTLP to a
real collector (rotel), held against the installed `opentelemetry-semantic-conventions`:
names, units and instrument kinds come from the package's own `create_*` helpers,
attribute keys and values from its constants and enums, deprecations from the
docstrings it ships ("Deprecated: Replaced by ..."). Nothing here is a copy of a name.

The package does not say which attributes belong to which metric, nor their requirement
levels (the conventions' YAML holds those): PROMISED names them, by the package's
constants, for each metric aiva promises.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from enum import Enum
from functools import cache
from types import ModuleType
from typing import Any

import psutil
import pytest
from opentelemetry.metrics import Counter, Meter, ObservableGauge, UpDownCounter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.semconv._incubating import attributes as attribute_modules
from opentelemetry.semconv._incubating import metrics as metric_modules
from opentelemetry.semconv._incubating.attributes import (
    cpu_attributes,
    cpython_attributes,
    disk_attributes,
    network_attributes,
    process_attributes,
    system_attributes,
)
from opentelemetry.semconv._incubating.metrics import (
    cpython_metrics,
    process_metrics,
    system_metrics,
)

from infra.require import require_binary
from infra.rotel import INSTALL_HINT as ROTEL_INSTALL_HINT
from infra.rotel import Record, Rotel, rotel_binary
from infra.service import AivaService

SCOPE = "aiva.system"

# A metric's attributes: key -> the enum of its values, or the Python type of a free value.
Values = type[Enum] | type[int] | type[str]
CPU_MODE = {cpu_attributes.CPU_MODE: cpu_attributes.CpuModeValues}
PER_CPU = {**CPU_MODE, cpu_attributes.CPU_LOGICAL_NUMBER: int}
MEMORY_STATE = {system_attributes.SYSTEM_MEMORY_STATE: system_attributes.SystemMemoryStateValues}

PROMISED: dict[str, dict[str, Values]] = {
    # The SPEC's list ...
    process_metrics.PROCESS_CPU_TIME: CPU_MODE,
    process_metrics.PROCESS_MEMORY_USAGE: {},
    system_metrics.SYSTEM_CPU_UTILIZATION: PER_CPU,
    system_metrics.SYSTEM_MEMORY_USAGE: MEMORY_STATE,
    # ... and the rest of what aiva exports.
    process_metrics.PROCESS_CPU_UTILIZATION: CPU_MODE,
    process_metrics.PROCESS_MEMORY_VIRTUAL: {},
    process_metrics.PROCESS_THREAD_COUNT: {},
    process_metrics.PROCESS_UNIX_FILE_DESCRIPTOR_COUNT: {},
    process_metrics.PROCESS_CONTEXT_SWITCHES: {
        process_attributes.PROCESS_CONTEXT_SWITCH_TYPE: (
            process_attributes.ProcessContextSwitchTypeValues
        )
    },
    process_metrics.PROCESS_UPTIME: {},
    cpython_metrics.CPYTHON_GC_COLLECTIONS: {
        cpython_attributes.CPYTHON_GC_GENERATION: cpython_attributes.CPythonGCGenerationValues
    },
    system_metrics.SYSTEM_CPU_TIME: PER_CPU,
    system_metrics.SYSTEM_MEMORY_LIMIT: {},
    system_metrics.SYSTEM_MEMORY_UTILIZATION: MEMORY_STATE,
    system_metrics.SYSTEM_NETWORK_IO: {
        network_attributes.NETWORK_IO_DIRECTION: network_attributes.NetworkIoDirectionValues,
        network_attributes.NETWORK_INTERFACE_NAME: str,
    },
    system_metrics.SYSTEM_DISK_IO: {
        disk_attributes.DISK_IO_DIRECTION: disk_attributes.DiskIoDirectionValues,
        system_attributes.SYSTEM_DEVICE: str,
    },
}


def submodules(package: ModuleType) -> list[ModuleType]:
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


@cache
def documented(package_name: str) -> dict[str, tuple[ModuleType, str, str]]:
    """Every string constant of the package's modules: value -> (module, constant name,
    the docstring under it), read from the source the package ships."""
    package = importlib.import_module(package_name)
    found: dict[str, tuple[ModuleType, str, str]] = {}
    for module in submodules(package):
        body = ast.parse(inspect.getsource(module)).body
        for statement, following in zip(body, [*body[1:], None], strict=True):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(statement.value, ast.Constant)
                and isinstance(statement.value.value, str)
            ):
                doc = ""
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                    doc = str(following.value.value)
                found[statement.value.value] = (module, statement.target.id, doc.strip())
    return found


def metric_constant(name: str) -> tuple[ModuleType, str, str]:
    found = documented(metric_modules.__name__).get(name)
    assert found is not None, f"{name} is no metric of the semantic conventions"
    return found


def attribute_doc(key: str) -> str:
    found = documented(attribute_modules.__name__).get(key)
    assert found is not None, f"{key} is no attribute of the semantic conventions"
    return found[2]


@cache
def member_docs(enum: type[Enum]) -> dict[object, str]:
    """An enum's values -> the docstring under each member, from the package's source."""
    [node] = [
        n
        for n in ast.walk(ast.parse(inspect.getsource(inspect.getmodule(enum))))  # type: ignore[arg-type]
        if isinstance(n, ast.ClassDef) and n.name == enum.__name__
    ]
    docs: dict[object, str] = {}
    for statement, following in zip(node.body, [*node.body[1:], None], strict=True):
        if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant):
            doc = ""
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                doc = str(following.value.value)
            docs[statement.value.value] = doc.strip()
    return docs


def kind_of(instrument: object) -> str:
    for kind, cls in (
        ("counter", Counter),
        ("updowncounter", UpDownCounter),
        ("gauge", ObservableGauge),
    ):
        if isinstance(instrument, cls):
            return kind
    raise AssertionError(f"unexpected instrument {instrument!r}")


def convention(meter: Meter, name: str) -> tuple[str, str]:
    """(instrument kind, unit) as the package's own create_<metric> helper makes it."""
    module, constant, _ = metric_constant(name)
    create: Callable[..., Any] = getattr(module, f"create_{constant.lower()}")
    takes_callbacks = "callbacks" in inspect.signature(create).parameters
    instrument = create(meter, None) if takes_callbacks else create(meter)
    return kind_of(instrument), str(instrument.unit)


def exported_kind(metric: Record) -> str:
    """The instrument kind an OTLP metric stands for (the data model's mapping)."""
    if metric["type"] == "Sum":
        return "counter" if metric["monotonic"] else "updowncounter"
    assert metric["type"] == "Gauge", metric
    return "gauge"


def deprecated(doc: str) -> bool:
    return doc.startswith("Deprecated")


@pytest.fixture(scope="module")
def meter() -> Iterator[Meter]:
    provider = MeterProvider(shutdown_on_exit=False)
    yield provider.get_meter("conformance")
    provider.shutdown()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[Record]]]:
    """name -> the OTLP metrics (one per export) a real `aiva serve` pushed to rotel.

    Module-scoped, one service for every test here: the conftest factories are per test.
    """
    binary = require_binary(rotel_binary(), ROTEL_INSTALL_HINT)
    collector = Rotel(binary, tmp_path_factory.mktemp("rotel"))
    workdir = tmp_path_factory.mktemp("aiva")
    (workdir / "config").mkdir()
    service = AivaService(
        workdir,
        workdir / "config",
        env={
            "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint,
            "AIVA_TELEMETRY__OTLP__TIMEOUT_S": "2",
            "AIVA_TELEMETRY__METRICS__EXPORT_INTERVAL_S": "1",
            "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
        },
    )
    try:
        collector.start()
        service.start()
        with service.client() as client:
            assert client.get("/api/demo/work").status_code == 200
        # The third export: the utilizations have a window of CPU time behind them.
        collector.wait_for(lambda c: len(uptimes(c)) >= 3, timeout=20)
        by_name: dict[str, list[Record]] = {}
        for metric in collector.metrics():
            by_name.setdefault(metric["name"], []).append(metric)
        yield by_name
    finally:
        service.stop()
        collector.stop()


def uptimes(collector: Rotel) -> list[Record]:
    return [m for m in collector.metrics() if m["name"] == process_metrics.PROCESS_UPTIME]


def test_every_promised_metric_arrives_under_aiva_s_scope(
    exported: dict[str, list[Record]],
) -> None:
    missing = sorted(set(PROMISED) - set(exported))
    assert not missing, f"not exported: {missing}"
    ours = {name for name, metrics in exported.items() if metrics[0]["scope"] == SCOPE}
    assert ours == set(PROMISED), "aiva.system exports exactly the promised metrics"
    # Nothing else in the pipeline speaks for the process or the host.
    others = {
        name
        for name, metrics in exported.items()
        if name.startswith(("process.", "system.", "cpython."))
        and any(m["scope"] != SCOPE for m in metrics)
    }
    assert not others


@pytest.mark.parametrize("name", sorted(PROMISED))
def test_name_unit_and_kind_are_the_conventions(
    name: str, exported: dict[str, list[Record]], meter: Meter
) -> None:
    _, constant, doc = metric_constant(name)
    assert not deprecated(doc), f"{name} ({constant}): {doc}"
    kind, unit = convention(meter, name)
    for metric in exported[name]:
        assert (exported_kind(metric), metric["unit"]) == (kind, unit), metric
        assert metric["description"], f"{name} has no description"


@pytest.mark.parametrize("name", sorted(PROMISED))
def test_attributes_are_the_conventions(name: str, exported: dict[str, list[Record]]) -> None:
    expected = PROMISED[name]
    for key in expected:
        assert not deprecated(attribute_doc(key)), f"{key}: {attribute_doc(key)}"
    latest = exported[name][-1]
    assert latest["points"] > 0, f"{name}: no data point in the last export"
    for attributes in latest["point_attributes"]:
        assert set(attributes) == set(expected), (name, attributes)
        for key, value in attributes.items():
            values = expected[key]
            if isinstance(values, type) and issubclass(values, Enum):
                docs = member_docs(values)
                assert value in docs, f"{name}: {key}={value!r} is not one of {sorted(docs)}"
                assert not deprecated(docs[value]), f"{key}={value!r}: {docs[value]}"
            else:
                assert isinstance(value, values) and value != "", (name, key, value)


def test_each_logical_cpu_is_numbered_from_zero(exported: dict[str, list[Record]]) -> None:
    numbers = {
        attributes[cpu_attributes.CPU_LOGICAL_NUMBER]
        for attributes in exported[system_metrics.SYSTEM_CPU_TIME][-1]["point_attributes"]
    }
    assert numbers == set(range(psutil.cpu_count()))
