"""`/metrics` with `aiva serve --workers 2`: the merge rules (pure logic), the snapshot
files (a torn or foreign one is skipped), and the real thing: two workers scraped by a
real Prometheus, one of them killed under load."""

from __future__ import annotations

import gzip
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiva.telemetry.metrics import ProducingPrometheusReader, request_duration_histogram
from aiva.telemetry.metrics_share import MetricsShare
from aiva.telemetry.metrics_snapshot import (
    ExemplarSample,
    HistogramPoint,
    Kind,
    NumberPoint,
    SharedMetric,
    Snapshot,
    SnapshotError,
    decode,
    encode,
    merge,
)
from aiva.telemetry.system import SystemMetrics
from infra.prometheus import INSTALL_HINT as PROMETHEUS_INSTALL_HINT
from infra.prometheus import Prometheus
from infra.require import require_binary
from infra.service import AivaService
from infra.wait import wait_for

SCOPE = InstrumentationScope("aiva.http", "0.1.0")
RESOURCE = Resource({"service.name": "merge-test"})
BOUNDS = (0.1, 1.0)
COUNT = "http_server_request_duration_seconds_count"


def number(name: str, kind: Kind, value: float, **attributes: str) -> SharedMetric:
    return SharedMetric(SCOPE, name, "", "1", kind, (NumberPoint(attributes, 1, 2, value),))


def histogram(
    counts: tuple[int, int, int], exemplars: tuple[ExemplarSample, ...] = ()
) -> SharedMetric:
    point = HistogramPoint(
        {"http.route": "/x"}, 1, 2, sum(counts), 1.5, counts, BOUNDS, 0.01, 3.0, exemplars
    )
    return SharedMetric(SCOPE, "http.server.request.duration", "", "s", "histogram", (point,))


def snapshot(pid: int, *metrics: SharedMetric) -> Snapshot:
    return Snapshot(pid, 100.0 + pid, f"instance-{pid}", metrics)


def by_name(data: MetricsData) -> dict[str, object]:
    [resource_metrics] = data.resource_metrics
    return {m.name: m.data for sm in resource_metrics.scope_metrics for m in sm.metrics}


def worker_snapshots() -> tuple[Snapshot, Snapshot, Snapshot]:
    """The answering worker (1), a live one (2) and a dead one (3), each with a counter,
    an up-down counter, a gauge, a host-wide counter and a per-process gauge."""

    def of(pid: int, base: float) -> Snapshot:
        return snapshot(
            pid,
            number("aiva.telemetry.exported", "counter", base, signal="spans"),
            number("http.server.active_requests", "updowncounter", base / 10),
            number("aiva.health.overall", "gauge", pid),
            number("system.network.io", "counter", 1000 + pid),
            number("process.memory.usage", "updowncounter", base * 1000),
            histogram((pid, 1, 0)),
        )

    return of(1, 10), of(2, 20), of(3, 40)


def test_counters_and_histograms_add_up_over_every_worker_that_ever_wrote() -> None:
    own, live, dead = worker_snapshots()
    merged = by_name(merge(own, [live, dead], lambda s: s.pid == 2, RESOURCE))
    exported = merged["aiva.telemetry.exported"]
    assert isinstance(exported, Sum) and exported.is_monotonic
    assert [p.value for p in exported.data_points] == [70]
    duration = merged["http.server.request.duration"]
    assert isinstance(duration, Histogram)
    [point] = duration.data_points
    assert (point.count, list(point.bucket_counts), point.sum) == (9, [6, 3, 0], 4.5)


def test_live_sums_gauges_host_and_process_series_follow_their_own_rules() -> None:
    own, live, dead = worker_snapshots()
    merged = by_name(merge(own, [live, dead], lambda s: s.pid == 2, RESOURCE))
    active = merged["http.server.active_requests"]
    assert isinstance(active, Sum) and not active.is_monotonic
    assert [p.value for p in active.data_points] == [3.0]  # 1 + 2: the dead worker's left out
    health = merged["aiva.health.overall"]
    assert isinstance(health, Gauge)
    assert [p.value for p in health.data_points] == [1]  # the answering worker's status
    network = merged["system.network.io"]
    assert isinstance(network, Sum)
    assert [p.value for p in network.data_points] == [1001]  # host-wide: counted once
    memory = merged["process.memory.usage"]
    assert isinstance(memory, Sum)
    assert {p.attributes["service.instance.id"]: p.value for p in memory.data_points} == {
        "instance-1": 10000,
        "instance-2": 20000,
    }


def test_a_worker_replaced_never_lowers_a_counter() -> None:
    """Worker 2 dies after 20 and a new worker (4) takes over from 0: the sum goes on."""
    own, live, _ = worker_snapshots()
    before = by_name(merge(own, [live], lambda s: True, RESOURCE))["aiva.telemetry.exported"]
    fresh = snapshot(4, number("aiva.telemetry.exported", "counter", 0, signal="spans"))
    after = by_name(merge(own, [live, fresh], lambda s: s.pid == 4, RESOURCE))
    exported = after["aiva.telemetry.exported"]
    assert isinstance(before, Sum) and isinstance(exported, Sum)
    assert exported.data_points[0].value == before.data_points[0].value == 30


def test_exemplars_merge_to_the_newest_per_bucket() -> None:
    old_fast = ExemplarSample(0.05, 1_000, 0xA, 0x1)
    new_fast = ExemplarSample(0.07, 2_000, 0xB, 0x2)
    slow = ExemplarSample(0.5, 1_500, 0xC, 0x3)
    own = snapshot(1, histogram((1, 1, 0), (old_fast, slow)))
    other = snapshot(2, histogram((1, 0, 0), (new_fast,)))
    merged = by_name(merge(own, [other], lambda s: True, RESOURCE))
    duration = merged["http.server.request.duration"]
    assert isinstance(duration, Histogram)
    [point] = duration.data_points
    assert [(e.trace_id, e.span_id, e.value) for e in point.exemplars] == [
        (0xB, 0x2, 0.07),
        (0xC, 0x3, 0.5),
    ]


def test_a_snapshot_survives_encoding_and_a_torn_one_does_not_decode() -> None:
    exemplar = ExemplarSample(0.05, 1_000, (1 << 127) + 5, (1 << 63) + 7)
    original = snapshot(7, histogram((1, 0, 0), (exemplar,)), *worker_snapshots()[0].metrics)
    raw = encode(original)
    assert decode(raw) == original
    for broken in (raw[: len(raw) // 2], b"", b"[]", raw.replace(b'"format":1', b'"format":2')):
        with pytest.raises(SnapshotError):
            decode(broken)


def _share(directory: Path) -> MetricsShare:
    return MetricsShare(directory, "instance-self")


def test_a_corrupt_file_is_skipped_counted_logged_once_and_its_last_good_version_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    share = _share(tmp_path)
    other = tmp_path / "4242-0123456789ab.json"
    good = snapshot(4242, number("aiva.telemetry.exported", "counter", 5, signal="spans"))
    other.write_bytes(encode(good))
    assert share.others() == [good]
    with caplog.at_level(logging.WARNING, logger="aiva.telemetry.metrics_share"):
        other.write_bytes(encode(good)[:40])  # torn: a half-written file
        assert share.others() == [good]
        assert share.others() == [good]  # the same broken version is not read again
        other.write_bytes(b"\x00" * 10)
        assert share.others() == [good]
    assert share.skipped == 2
    assert len([r for r in caplog.records if "4242-" in r.getMessage()]) == 1
    # A file that never decoded contributes nothing; one named for another pid neither.
    (tmp_path / "4343-0123456789ab.json").write_bytes(b"{")
    (tmp_path / "4444-0123456789ab.json").write_bytes(encode(good))
    (tmp_path / ".4545-0123456789ab.tmp").write_bytes(encode(good))
    assert share.others() == [good]


def test_an_oversized_file_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("aiva.telemetry.metrics_share.MAX_BYTES", 100)
    share = _share(tmp_path)
    big = snapshot(4242, *worker_snapshots()[0].metrics)
    (tmp_path / "4242-0123456789ab.json").write_bytes(encode(big))
    assert share.others() == []
    assert share.skipped == 1


def test_the_own_file_is_replaced_whole(tmp_path: Path) -> None:
    """What a reader finds is always a whole snapshot: written aside, then renamed."""
    share = _share(tmp_path)
    data = merge(worker_snapshots()[0], [], lambda s: True, RESOURCE)
    share.publish(data)
    written = decode(share.path.read_bytes())
    assert (written.pid, written.instance) == (os.getpid(), "instance-self")
    assert [p.name for p in tmp_path.iterdir()] == [share.path.name]


# ---------------------------------------------------------------------------------------
# The snapshot thread's cost


def test_snapshot_cost_per_second(tmp_path: Path) -> None:
    """One snapshot (a collection with aiva's process and system points and a histogram,
    the encoding, the write) costs a worker a few milliseconds of CPU, once a second."""
    share = MetricsShare(tmp_path, "instance-self")
    reader = ProducingPrometheusReader(
        CollectorRegistry(), [request_duration_histogram()], RESOURCE, share
    )
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    try:
        SystemMetrics(provider).start()
        operation = provider.get_meter("aiva.operation").create_histogram("aiva.operation.duration")
        for index in range(50):
            operation.record(index / 100, {"operation": f"op{index % 5}"})
        reader.exposition.publish()  # the first collection sets up the SDK's storage
        rounds = 40
        started = time.thread_time()
        for _ in range(rounds):
            reader.exposition.publish()
        per_snapshot_ms = (time.thread_time() - started) / rounds * 1000
    finally:
        provider.shutdown()
    print(f"\nsnapshot: {per_snapshot_ms:.2f} ms of CPU each, once a second per worker")
    assert decode(share.path.read_bytes()).pid == os.getpid()
    assert per_snapshot_ms < 25


# ---------------------------------------------------------------------------------------
# Two real workers, a real Prometheus

ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false"}
INFO_COUNT = 'http_server_request_duration_seconds_count{http_route="/info"}'
CLOSE = {"Connection": "close"}  # a fresh connection each time: both workers take requests


@pytest.fixture
def two_workers(aiva_service: Callable[..., AivaService]) -> AivaService:
    service = aiva_service(env=ENV, args=["--workers", "2"], ready_path="/livez")
    # Both workers up before counting (the readiness poll saw one): each logs its start.
    wait_for(lambda: service.log_text().count(" started (environment ") >= 2, 60)
    return service


def _info_pid(client: httpx.Client) -> int:
    """One request to /info (the counted route), answered by whichever worker: its pid."""
    answer = client.get("/info", headers=CLOSE)
    assert answer.status_code == 200
    return int(answer.json()["runtime"]["pid"])


def _info_total(text: str) -> float:
    """The /info requests counted in a text exposition (all series of that route)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == COUNT and sample.labels.get("http_route") == "/info":
                total += sample.value
    return total


def _query_value(server: Prometheus, promql: str) -> float | None:
    result = server.query(promql)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_prometheus_sees_every_request_of_both_workers(
    two_workers: AivaService, prometheus: Callable[..., Prometheus]
) -> None:
    server = prometheus(targets=[f"127.0.0.1:{two_workers.port}"])
    requests = 120
    pids: list[int] = []
    with two_workers.client() as client:
        for _ in range(requests):
            pids.append(_info_pid(client))
    served = {pid: pids.count(pid) for pid in set(pids)}
    assert len(served) == 2, f"one worker served all requests: {served}"
    # Each worker alone has fewer: only the merge makes the whole.
    total = f"sum({INFO_COUNT})"
    seen = wait_for(
        lambda: _query_value(server, total) == requests,
        30,
        message=lambda: f"{total} = {_query_value(server, total)}, not {requests} ({served})",
    )
    assert seen
    # The per-process series of both workers, kept apart by their instance ids.
    instances = server.wait_for_query("count(process_memory_usage_bytes) == 2")
    assert instances


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_scrapes_under_load_never_decrease_and_keep_up(two_workers: AivaService) -> None:
    sent: list[float] = []  # when each request was sent
    done: list[float] = []  # when each answer was back
    stop = threading.Event()

    def load() -> None:
        with two_workers.client() as client:
            while not stop.is_set() and len(sent) < 5000:
                sent.append(time.monotonic())
                _info_pid(client)
                done.append(time.monotonic())
                time.sleep(0.01)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    values = []
    try:
        time.sleep(1.0)
        with two_workers.client() as client:
            for _ in range(10):
                started = time.monotonic()
                text = client.get("/metrics", headers=CLOSE).text
                ended = time.monotonic()
                value = _info_total(text)
                values.append(value)
                # At least what was answered a second (the snapshot interval) before the
                # scrape began, with one more second for the scheduling of a loaded
                # machine; at most what had been sent by its end.
                answered_before = sum(1 for t in list(done) if t < started - 2.0)
                sent_by_end = sum(1 for t in list(sent) if t <= ended)
                assert answered_before <= value <= sent_by_end, (value, answered_before)
                time.sleep(0.3)
    finally:
        stop.set()
        loader.join(10)
    assert values == sorted(values), values
    assert values[-1] > values[0]


def _worker_pids(service: AivaService, count: int) -> set[int]:
    """The pids of `count` workers, as they answer /info (bounded)."""
    pids: set[int] = set()
    with service.client() as client:
        for _ in range(100):
            pids.add(_info_pid(client))
            if len(pids) >= count:
                break
    assert len(pids) >= count, pids
    return pids


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_a_killed_worker_is_replaced_and_counts_never_reset(
    two_workers: AivaService, prometheus: Callable[..., Prometheus]
) -> None:
    server = prometheus(targets=[f"127.0.0.1:{two_workers.port}"])
    first = _worker_pids(two_workers, 2)
    served: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with two_workers.client() as client:
            while not stop.is_set() and len(served) + len(failed) < 5000:
                try:
                    served.append(_info_pid(client))
                except (httpx.HTTPError, AssertionError) as error:
                    failed.append(repr(error))
                time.sleep(0.02)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        # Prometheus has the counter before the kill (it is what a false reset would undo).
        server.wait_for_query(f"sum({INFO_COUNT}) > 20", timeout=30)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        killed_at = len(served)
        wait_for(
            lambda: set(served[killed_at:]) - first,
            60,
            message=lambda: f"no replacement worker answered; answers from {set(served)}",
        )
        answered_after = len(served) - killed_at
        time.sleep(3.0)
    finally:
        stop.set()
        loader.join(10)
    assert answered_after > 0
    # What the killed worker had in flight may fail; the service goes on answering.
    assert len(failed) <= 5, failed
    requests = len(served) + len(failed)
    time.sleep(3.0)  # a scrape after the last request
    resets = _query_value(server, f"sum(resets({INFO_COUNT}[5m]))")
    increase = _query_value(server, f"sum(increase({INFO_COUNT}[1m]))")
    assert resets == 0
    # increase() extrapolates a little past the first and last samples; a false reset
    # would add everything counted before the kill (about half of all).
    assert increase is not None and increase <= requests * 1.15 + 5, (increase, requests)


@pytest.mark.fast_layer("metric_producers", "prometheus_translation")
def test_promtool_accepts_the_merged_exposition_and_gzip_carries_the_same(
    two_workers: AivaService,
) -> None:
    promtool = require_binary("promtool", PROMETHEUS_INSTALL_HINT)
    _worker_pids(two_workers, 2)
    with two_workers.client() as client:
        client.get("/api/demo/work", headers=CLOSE)
        for _ in range(4):  # the series of /metrics's own requests exist from now on
            client.get("/metrics", headers=CLOSE)
        time.sleep(1.5)  # in both workers' snapshots
        text = client.get("/metrics", headers=CLOSE).text
        with client.stream("GET", "/metrics", headers={**CLOSE, "Accept-Encoding": "gzip"}) as r:
            assert r.headers["content-encoding"] == "gzip"
            assert "Accept-Encoding" in r.headers["vary"]
            raw = b"".join(r.iter_raw())
        identity = client.get("/metrics", headers={**CLOSE, "Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert 'service_instance_id="' in text
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", ""), (
        checked.stdout + checked.stderr
    )
    unzipped = gzip.decompress(raw).decode()
    assert _series(unzipped) == _series(text)


def _series(text: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_worker_leaving_writes_its_last_counts(tmp_path: Path) -> None:
    """At shutdown the reader writes a last snapshot: what the worker counted after its
    previous one stays in the service's sums."""
    share = MetricsShare(tmp_path, "instance-self")
    reader = ProducingPrometheusReader(CollectorRegistry(), [], RESOURCE, share)
    provider = MeterProvider(metric_readers=[reader], resource=RESOURCE)
    provider.get_meter("test").create_counter("things").add(5)
    provider.shutdown()
    written = decode(share.path.read_bytes())
    assert [(m.name, [p.value for p in m.points]) for m in written.metrics] == [("things", [5])]
