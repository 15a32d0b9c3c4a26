"""The Counter, UpDownCounter and Histogram of `aiva.meter()`, aggregated by aiva.

A handler's own `Counter.add` or `Histogram.record` through the SDK costs ~20 µs on the
event loop (the work route's profile, two readers, trace_based exemplars): the SDK cleans
and hashes the attributes, asks the exemplar filter, and aggregates once per reader,
each step under its own lock. These instruments are the OpenTelemetry API's, with the
SDK's semantics, aggregated once under one lock as aiva's request histogram is
(aiva.telemetry.histogram), and produced to every reader of the provider at collection
(aiva.fast.producers): the same points as the SDK's, cumulative or delta as each reader
prefers, with the same start times, exemplars and warnings.

Differences, on purpose or by necessity:
- Sums keep one exemplar per point, as the SDK's SimpleFixedSizeExemplarReservoir(1):
  the first offered since the reader's previous collection, then each later one with
  probability 1/n. The draws are aiva's own (one per measurement, not one per reader),
  so when several measurements are offered, which one is kept differs from the SDK's
  run, not in distribution. A measurement with no span gives an exemplar without ids
  (the SDK's bucket keeps the ids of an earlier measurement, as for histograms).
- With several readers, a float sum is added up in the same order but grouped by every
  reader's collections, not by this reader's alone: the last bit can differ from the
  SDK's (integers and binary fractions are exact).
- The experimental meter configurator (a meter disabled by rule) is not honoured: aiva's
  provider has none.
- Bucket boundaries the SDK would refuse at the first measurement (unsorted, not finite)
  and histograms the exporter wants exponential go through the SDK's instrument.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackT,
    NoOpMeter,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
)
from opentelemetry.metrics import Counter as ApiCounter
from opentelemetry.metrics import Histogram as ApiHistogram
from opentelemetry.metrics import Meter as ApiMeter
from opentelemetry.metrics import UpDownCounter as ApiUpDownCounter
from opentelemetry.sdk.metrics import ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

from aiva.telemetry.attributes import AttributeKeys
from aiva.telemetry.histogram import (
    _OFF,
    ProducedHistogram,
)
from aiva.telemetry.sums import ProducedSum, sample_of

logger = logging.getLogger(__name__)

# The SDK's boundaries for a histogram with neither a view nor an advisory (1.45).
SDK_DEFAULT_BOUNDARIES = (
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
    7500.0, 10000.0,
)  # fmt: skip


# --- the API's instruments ---------------------------------------------------------------


class LeanCounter(ApiCounter):
    """The API's Counter, aggregated by aiva (see the module docstring)."""

    def __init__(self, name: str, unit: str, description: str, sums: ProducedSum) -> None:
        self.name = name.lower()
        self.unit = unit
        self.description = description
        self._sums = sums
        self._keys = AttributeKeys()
        self._filter = sums._filter

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if not math.isfinite(amount):
            logger.warning(
                "Add amount %s is not finite on Counter %s, ignoring measurement.",
                amount,
                self.name,
            )
            return
        if amount < 0:
            logger.warning("Add amount must be non-negative on Counter %s.", self.name)
            return
        keyed = self._keys.of(attributes)
        offer = self._sums.offer
        sample = (
            None
            if offer == _OFF
            else sample_of(offer, self._filter, amount, keyed.measured, context)
        )
        self._sums.add(keyed.key, keyed.point, amount, sample)


class LeanUpDownCounter(ApiUpDownCounter):
    """The API's UpDownCounter, aggregated by aiva (see the module docstring)."""

    def __init__(self, name: str, unit: str, description: str, sums: ProducedSum) -> None:
        self.name = name.lower()
        self.unit = unit
        self.description = description
        self._sums = sums
        self._keys = AttributeKeys()
        self._filter = sums._filter

    def add(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if not math.isfinite(amount):
            logger.warning(
                "Add amount %s is not finite on UpDownCounter %s, ignoring measurement.",
                amount,
                self.name,
            )
            return
        keyed = self._keys.of(attributes)
        offer = self._sums.offer
        sample = (
            None
            if offer == _OFF
            else sample_of(offer, self._filter, amount, keyed.measured, context)
        )
        self._sums.add(keyed.key, keyed.point, amount, sample)


class LeanHistogram(ApiHistogram):
    """The API's Histogram with explicit buckets, aggregated by aiva's ProducedHistogram."""

    def __init__(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
        *,
        histogram: ProducedHistogram | None = None,
    ) -> None:
        assert histogram is not None
        self.name = name.lower()
        self.unit = unit
        self.description = description
        self._histogram = histogram
        self._keys = AttributeKeys()

    def record(
        self, amount: float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        if not math.isfinite(amount):
            logger.warning(
                "Record amount %s is not finite on Histogram %s, ignoring measurement.",
                amount,
                self.name,
            )
            return
        if amount < 0:
            logger.warning("Record amount must be non-negative on Histogram %s.", self.name)
            return
        keyed = self._keys.of(attributes)
        span = None if context is None else trace.get_current_span(context)
        self._histogram.record(keyed.key, keyed.point, amount, span, context)


# --- the registry and the meter ----------------------------------------------------------

Producer = ProducedHistogram | ProducedSum


class ProducerRegistry:
    """The producers every reader of one provider adds to its collections.

    Readers attach when they are built, instruments join whenever they are created (a
    handler's first request): each side is attached to the other under one lock, and
    `producers()` is an immutable snapshot a collection iterates without it.
    """

    def __init__(self, producers: Sequence[Producer] = ()) -> None:
        self._lock = threading.Lock()
        self._producers: tuple[Producer, ...] = tuple(producers)
        self._readers: list[tuple[object, Callable[[type], AggregationTemporality]]] = []

    def producers(self) -> tuple[Producer, ...]:
        return self._producers

    def attach_reader(
        self, reader: object, temporality: Callable[[type], AggregationTemporality]
    ) -> None:
        """`temporality`: the reader's preferred temporality for an SDK instrument class."""
        with self._lock:
            self._readers.append((reader, temporality))
            for producer in self._producers:
                producer.attach(reader, temporality(producer.kind))

    def add(self, producer: Producer) -> None:
        with self._lock:
            for reader, temporality in self._readers:
                producer.attach(reader, temporality(producer.kind))
            self._producers = (*self._producers, producer)


class LeanInstruments:
    """What a provider's lean meters share: the producer registry, the exemplar filter,
    the configured bucket boundaries, and whether histograms may be explicit-bucket ones
    (not when the exporter asks for exponential histograms)."""

    def __init__(
        self,
        registry: ProducerRegistry,
        exemplar_filter: ExemplarFilter,
        buckets: Mapping[str, Sequence[float]],
        *,
        explicit_histograms: bool = True,
    ) -> None:
        self.registry = registry
        self.exemplar_filter = exemplar_filter
        self.buckets = dict(buckets)
        self.explicit_histograms = explicit_histograms
        self._lock = threading.Lock()
        self._meters: dict[InstrumentationScope, LeanMeter] = {}

    def meter(
        self,
        sdk_meter: ApiMeter,
        scope: InstrumentationScope,
    ) -> LeanMeter:
        """The one lean meter of `scope` (the SDK returns one Meter a scope, too)."""
        with self._lock:
            meter = self._meters.get(scope)
            if meter is None:
                meter = self._meters[scope] = LeanMeter(sdk_meter, scope, self)
            return meter


class LeanMeterProvider(MeterProvider):
    """The SDK's MeterProvider plus the lean instruments `aiva.meter()` hands out (the
    provider's own `get_meter` stays the SDK's: instrumentations keep its instruments)."""

    def __init__(self, *args: Any, lean: LeanInstruments, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean = lean


def meter_of(
    provider: object,
    name: str,
    version: str | None = None,
    schema_url: str | None = None,
    attributes: Attributes = None,
) -> ApiMeter:
    """The lean meter of a provider that has them, else the provider's own meter."""
    get_meter: Callable[..., ApiMeter] = provider.get_meter  # type: ignore[attr-defined]
    sdk_meter = get_meter(name, version, schema_url, attributes)
    lean = getattr(provider, "lean", None)
    if not isinstance(lean, LeanInstruments) or isinstance(sdk_meter, NoOpMeter):
        return sdk_meter  # no lean path, or the SDK disabled / shut down
    scope = InstrumentationScope(name, version, schema_url, attributes)
    return lean.meter(sdk_meter, scope)


_NAME_ERROR = "Expected ASCII string of maximum length 255 characters but got {}"
_UNIT_ERROR = "Expected ASCII string of maximum length 63 characters but got {}"


class LeanMeter(ApiMeter):
    """A meter whose Counter, UpDownCounter and Histogram are aiva's; its gauges and
    observable instruments are the SDK meter's of the same scope."""

    def __init__(
        self, sdk_meter: ApiMeter, scope: InstrumentationScope, lean: LeanInstruments
    ) -> None:
        super().__init__(scope.name, scope.version, scope.schema_url)
        self._sdk = sdk_meter
        self._scope = scope
        self._lean = lean
        self._lock = threading.Lock()
        # By the SDK's instrument id (name, kind, unit, description): the instrument and
        # the advisory it was created with.
        self._instruments: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def create_counter(self, name: str, unit: str = "", description: str = "") -> ApiCounter:
        return self._instrument(  # type: ignore[no-any-return]
            name, "Counter", unit, description, None, self._new_counter
        )

    def create_up_down_counter(
        self, name: str, unit: str = "", description: str = ""
    ) -> ApiUpDownCounter:
        return self._instrument(  # type: ignore[no-any-return]
            name, "UpDownCounter", unit, description, None, self._new_up_down_counter
        )

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> ApiHistogram:
        advisory = explicit_bucket_boundaries_advisory
        if advisory is not None and not _numbers(advisory):
            logger.warning("explicit_bucket_boundaries_advisory must be a sequence of numbers")
            advisory = None
        boundaries = self._lean.buckets.get(name.strip().lower())
        if boundaries is None:
            boundaries = advisory if advisory is not None else SDK_DEFAULT_BOUNDARIES
        if not (
            self._lean.explicit_histograms or name.strip().lower() in self._lean.buckets
        ) or not _valid_boundaries(boundaries):
            # The SDK's own instrument: its exponential aggregation, or its error at the
            # first measurement.
            return self._sdk.create_histogram(
                name, unit, description, explicit_bucket_boundaries_advisory=advisory
            )

        def new(checked: str, unit: str, description: str) -> LeanHistogram:
            histogram = ProducedHistogram(
                checked.lower(),
                unit=unit,
                description=description,
                boundaries=tuple(boundaries),
                scope=self._scope,
                exemplar_filter=self._lean.exemplar_filter,
            )
            self._lean.registry.add(histogram)
            return LeanHistogram(checked, unit, description, histogram=histogram)

        return self._instrument(  # type: ignore[no-any-return]
            name, "Histogram", unit, description, advisory, new
        )

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Any:
        # The API names its gauge type privately (`_Gauge`, 1.45): the SDK meter's own.
        return self._sdk.create_gauge(name, unit, description)

    def create_observable_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableCounter:
        return self._sdk.create_observable_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableGauge:
        return self._sdk.create_observable_gauge(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self,
        name: str,
        callbacks: Sequence[CallbackT] | None = None,
        unit: str = "",
        description: str = "",
    ) -> ObservableUpDownCounter:
        return self._sdk.create_observable_up_down_counter(name, callbacks, unit, description)

    def _instrument(
        self,
        name: str,
        kind: str,
        unit: str,
        description: str,
        advisory: Any,
        new: Callable[[str, str, str], Any],
    ) -> Any:
        """The instrument of this id, made by `new` the first time (the SDK's checks and
        its warning when the same id comes with another advisory)."""
        unit = "" if unit is None else unit
        description = "" if description is None else description
        with self._lock:
            instrument_id = (name.strip().lower(), kind, unit, description)
            known = self._instruments.get(instrument_id)
            if known is None:
                # The SDK refuses these names and units as it builds the instrument.
                if not _valid_name(name):
                    raise Exception(_NAME_ERROR.format(name))
                if not _valid_unit(unit):
                    raise Exception(_UNIT_ERROR.format(unit))
                instrument = new(name, unit, description)
                self._instruments[instrument_id] = (instrument, advisory)
                return instrument
        instrument, registered = known
        if registered != advisory:
            logger.warning(
                "An instrument with name %s, type %s, unit %s and description %s has been "
                "created already with a different advisory value %s and will be used instead.",
                name,
                kind,
                unit,
                description,
                registered,
            )
        return instrument

    def _new_counter(self, name: str, unit: str, description: str) -> LeanCounter:
        sums = self._sums(name, unit, description, monotonic=True)
        return LeanCounter(name, unit, description, sums)

    def _new_up_down_counter(self, name: str, unit: str, description: str) -> LeanUpDownCounter:
        sums = self._sums(name, unit, description, monotonic=False)
        return LeanUpDownCounter(name, unit, description, sums)

    def _sums(self, name: str, unit: str, description: str, *, monotonic: bool) -> ProducedSum:
        sums = ProducedSum(
            name.lower(),
            unit=unit,
            description=description,
            scope=self._scope,
            monotonic=monotonic,
            exemplar_filter=self._lean.exemplar_filter,
        )
        self._lean.registry.add(sums)
        return sums


# The API's instrument name and unit syntax (the specification's), which the SDK enforces.
_NAME = re.compile(r"[a-zA-Z][-_./a-zA-Z0-9]{0,254}")
_UNIT = re.compile(r"[\x00-\x7F]{0,63}")


def _valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _valid_unit(unit: str) -> bool:
    return _UNIT.fullmatch(unit) is not None


def _numbers(advisory: object) -> bool:
    """As the SDK's check of explicit_bucket_boundaries_advisory."""
    if not isinstance(advisory, Sequence):
        return False
    try:
        return all(isinstance(bound, float | int) for bound in advisory)
    except (KeyError, TypeError):
        return False


def _valid_boundaries(boundaries: Sequence[float]) -> bool:
    return all(math.isfinite(bound) for bound in boundaries) and all(
        low < high for low, high in itertools.pairwise(boundaries)
    )
