"""The OpenTelemetry Prometheus exporter's translation of OpenTelemetry points to
Prometheus families, driven by aiva (aiva.telemetry.exposition) rather than by the
exporter's own collector.

Private to opentelemetry-exporter-prometheus (0.66b1): the translation (`_CustomCollector`,
fed with `add_metrics_data` and without its collecting callback) and the name and label
sanitizing it applies (`_mapping`), which the exemplars must find their samples by. The
exporter's collector renders no exemplars and collects by itself when asked, so it can
neither show exemplars nor merge several workers' snapshots first; keeping its
translation keeps aiva's names, units and scope labels those of the compatibility
specification (tests/conformance).
"""

from __future__ import annotations

from typing import Any

# Imported where used, not at import: the self-test must find them missing when they are.


def translator() -> Any:
    """A translation of MetricsData into prometheus_client families (`add_metrics_data`,
    then `collect`)."""
    from opentelemetry.exporter.prometheus import _CustomCollector

    return _CustomCollector()


def sanitize_full_name(name: str) -> str:
    """A metric's Prometheus name, as the translation writes it."""
    from opentelemetry.exporter.prometheus._mapping import sanitize_full_name as sanitize

    return str(sanitize(name))


def sanitize_attribute(key: str) -> str:
    """A label's Prometheus name, as the translation writes it."""
    from opentelemetry.exporter.prometheus._mapping import sanitize_attribute as sanitize

    return str(sanitize(key))


def map_unit(unit: str) -> str:
    """A unit's Prometheus suffix, as the translation writes it."""
    from opentelemetry.exporter.prometheus._mapping import map_unit as mapped

    return str(mapped(unit))


def translation_works() -> str | None:
    """The translation of one collection renders as the exporter's own reader renders the
    same instruments, and the sanitizing gives the names it gives."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    stock_registry = CollectorRegistry()
    stock = PrometheusMetricReader(registry=stock_registry)
    memory = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[stock, memory], shutdown_on_exit=False)
    meter = provider.get_meter("aiva.fast", "1")
    meter.create_counter("fast.self_test.count", unit="{item}").add(2, {"a.b": "c"})
    meter.create_histogram("fast.self_test.duration", unit="s").record(0.2, {"a.b": "c"})
    data = memory.get_metrics_data()
    if data is None:
        return "the in-memory reader collected nothing"
    ours_registry = CollectorRegistry()
    collector = translator()
    collector.add_metrics_data(data)

    class _Once:
        def collect(self) -> Any:
            return collector.collect()

    ours_registry.register(_Once())
    ours, theirs = generate_latest(ours_registry), generate_latest(stock_registry)
    provider.shutdown()
    if ours != theirs:
        return "its families differ from the exporter's own rendering"
    if (sanitize_full_name("a.b-c"), sanitize_attribute("a.b"), map_unit("s")) != (
        "a_b_c",
        "a_b",
        "seconds",
    ):
        return "its name sanitizing changed"
    return None
