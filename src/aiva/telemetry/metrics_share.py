"""`/metrics` with `aiva serve --workers N`: the workers share their metrics through
snapshot files, and whichever worker answers a scrape merges them all.

How: every worker writes its collected metrics (aiva.telemetry.metrics_snapshot) to
`<dir>/<pid>-<token>.json` in the private (0700) directory the server makes for its
workers: from a daemon thread every second, and right before it answers a scrape. The
answering worker merges its own fresh collection with every other worker's file, never
its live state with its own older file, so a scrape shows at least what any earlier
scrape showed, whichever worker answered it: counters never move backwards.

Why files and not the alternatives: prometheus_client's multiprocess mode (an mmap file
per metric) knows nothing of the SDK's instruments, drops custom collectors and
exemplars; a collecting parent would need uvicorn's supervisor replaced and a channel
to each worker; a per-worker label alone would leave Prometheus a series that resets
each time a worker is replaced.

Why merge OpenTelemetry points and not Prometheus families: the rules need what the
families lose (a monotonic sum, an up-down counter and a gauge are alike there).

Cost: nothing on the request path. Each worker pays one collection a second on this
thread (the SDK's collection with its psutil reads, the encoding and a write: about
3.5 ms of CPU, measured by tests/telemetry/test_workers_metrics.py's
test_snapshot_cost_per_second; the per-process series change every second, so a
snapshot is written every second): a fixed 0.35 % of a core, 3.5 µs a request at
1,000 requests a second per worker, less above. A scrape pays its own collection, a `stat` per file,
the parsing of each file changed since the previous scrape (a dead worker's file is
parsed once), a liveness check per worker and the merge.

A worker that dies mid-write leaves its temporary file, never a torn snapshot
(`os.replace` is atomic; readers take only final names); its last snapshot stays in the
sums of counters and histograms (no false reset), and its per-process series leave.

Bounds: the newest MAX_FILES snapshots of at most MAX_ENTRIES directory entries are
merged (beyond that, the oldest workers' counts would drop out: logged once); a file is
read up to MAX_BYTES (a writer whose snapshot would be bigger keeps its previous file,
a reader skips a bigger file; both logged once); a file that does not decode is skipped,
counted and logged once, its last good version (if any) staying in the merge.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
from opentelemetry.sdk.metrics.export import MetricsData
from opentelemetry.sdk.resources import Resource

from aiva.telemetry.metrics_snapshot import (
    INSTANCE_ATTRIBUTE,
    Snapshot,
    SnapshotError,
    decode,
    encode,
    merge,
    snapshot_of,
)

logger = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 1.0
MAX_FILES = 256
MAX_ENTRIES = 1024
# The reference app's snapshot takes about 16 KiB; this is room for ~25,000 histogram
# points, over the SDK's default cardinality limit (2,000 per metric) on a dozen metrics.
MAX_BYTES = 8 * 1024 * 1024
_PER_WORKER = frozenset((INSTANCE_ATTRIBUTE, "process.pid"))
_SNAPSHOT_NAME = re.compile(r"(\d+)-[0-9a-f]{12}\.json")


def worker_metrics_dir(environ: Mapping[str, str]) -> Path | None:
    """The directory `aiva serve --workers N` made for its workers (aiva.server), or
    None with one worker. It is the server's hand-over to its own workers, not a
    setting: read where the metric reader is built."""
    from aiva.server import METRICS_DIR_VARIABLE  # the server module imports uvicorn

    value = environ.get(METRICS_DIR_VARIABLE, "")
    return Path(value) if value else None


@dataclass(frozen=True)
class _Read:
    """A file as last read: its stat signature and the last snapshot that decoded."""

    signature: tuple[int, int, int]
    snapshot: Snapshot | None


class MetricsShare:
    """One worker's side: writes its snapshots, reads and merges everyone's."""

    def __init__(self, directory: Path, instance: str) -> None:
        self.directory = directory
        self.pid = os.getpid()
        self.started = psutil.Process(self.pid).create_time()
        self.instance = instance
        token = secrets.token_hex(6)  # a later process with the same pid writes elsewhere
        self.path = directory / f"{self.pid}-{token}.json"
        self._temporary = directory / f".{self.pid}-{token}.tmp"
        self._files: dict[str, _Read] = {}
        self._reported: set[str] = set()
        self._dead: set[tuple[int, float]] = set()  # a process that ended stays ended
        self.skipped = 0  # files (versions of files) that could not be used

    def publish(self, data: MetricsData) -> MetricsData:
        """Write this worker's collection as its snapshot; return it unchanged."""
        snapshot, _ = snapshot_of(data, self.pid, self.started, self.instance)
        self._write(encode(snapshot))
        return data

    def merged(self, data: MetricsData) -> MetricsData:
        """This worker's fresh collection (written first) merged with every other
        worker's snapshot. Runs on a scrape's thread, never on the event loop."""
        own, unshared = snapshot_of(data, self.pid, self.started, self.instance)
        self._write(encode(own))
        resource = (
            data.resource_metrics[0].resource if data.resource_metrics else Resource.get_empty()
        )
        return merge(own, self.others(), self._alive, _service_wide(resource), unshared)

    def _write(self, raw: bytes) -> None:
        if len(raw) > MAX_BYTES:
            self._report_once(
                "own-size",
                "this worker's metrics snapshot takes %d bytes, over the %d limit: the "
                "other workers keep seeing its previous one (fewer series would fit)",
                len(raw),
                MAX_BYTES,
            )
            return
        try:
            self._temporary.write_bytes(raw)
            self._temporary.replace(self.path)  # atomic: readers see the old or the new
        except OSError as error:
            self._report_once("own-write", "cannot write this worker's metrics snapshot: %s", error)

    def others(self) -> list[Snapshot]:
        """Every other worker's last snapshot (bounded; see the module docstring)."""
        found = self._scan()
        if len(found) > MAX_FILES:
            self._report_once(
                "too-many",
                "%d metrics snapshots in %s: only the newest %d are merged",
                len(found),
                self.directory,
                MAX_FILES,
            )
            found = sorted(found, key=lambda item: item[1].st_mtime_ns, reverse=True)
            found = found[:MAX_FILES]
        snapshots = []
        for name, stat in found:
            snapshot = self._read(name, stat)
            if snapshot is not None:
                snapshots.append(snapshot)
        present = {name for name, _ in found}
        self._files = {n: r for n, r in self._files.items() if n in present}
        return snapshots

    def _scan(self) -> list[tuple[str, os.stat_result]]:
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for count, entry in enumerate(entries):
                    if count >= MAX_ENTRIES:
                        self._report_once(
                            "entries", "over %d entries in %s: the rest are not looked at",
                            MAX_ENTRIES, self.directory,
                        )  # fmt: skip
                        break
                    if entry.path != str(self.path) and _SNAPSHOT_NAME.fullmatch(entry.name):
                        try:
                            found.append((entry.name, entry.stat()))
                        except FileNotFoundError:
                            continue
        except OSError as error:
            self._report_once("scan", "cannot list %s: %s", self.directory, error)
        return found

    def _read(self, name: str, stat: os.stat_result) -> Snapshot | None:
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        known = self._files.get(name)
        if known is not None and known.signature == signature:
            return known.snapshot  # unchanged since the previous scrape: not parsed again
        last_good = known.snapshot if known is not None else None
        snapshot = last_good
        try:
            if stat.st_size > MAX_BYTES:
                raise SnapshotError(f"{stat.st_size} bytes, over the {MAX_BYTES} limit")
            with (self.directory / name).open("rb") as file:
                raw = file.read(MAX_BYTES + 1)
            if len(raw) > MAX_BYTES:
                raise SnapshotError(f"over the {MAX_BYTES} bytes limit")
            decoded = decode(raw)
            if str(decoded.pid) != _SNAPSHOT_NAME.fullmatch(name).group(1):  # type: ignore[union-attr]
                raise SnapshotError("written by another process than its name says")
            snapshot = decoded
        except FileNotFoundError:
            return last_good
        except (OSError, SnapshotError) as error:
            self.skipped += 1
            self._report_once(
                name, "metrics snapshot %s skipped (%s)%s", name, error,
                ": its last good version stays merged" if last_good else "",
            )  # fmt: skip
        self._files[name] = _Read(signature, snapshot)
        return snapshot

    def _alive(self, snapshot: Snapshot) -> bool:
        identity = (snapshot.pid, snapshot.started)
        if identity in self._dead:
            return False
        if _running(snapshot):
            return True
        if len(self._dead) < MAX_ENTRIES:
            self._dead.add(identity)
        return False

    def _report_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._reported:
            self._reported.add(key)
            logger.warning(message, *args)


def _service_wide(resource: Resource) -> Resource:
    """The resource without what names one worker (its pid and instance id): the merged
    exposition is the service's, and its `target_info` stays one series whichever worker
    answers (the per-process series carry the instance id)."""
    attributes = {
        key: value for key, value in resource.attributes.items() if key not in _PER_WORKER
    }
    return Resource(attributes, resource.schema_url)


def _running(snapshot: Snapshot) -> bool:
    """Whether the process that wrote `snapshot` still runs (not another one that got
    its pid later, not a zombie waiting for the server to reap it)."""
    try:
        process = psutil.Process(snapshot.pid)
        return (
            abs(process.create_time() - snapshot.started) < 0.01
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


class SnapshotThread:
    """Calls `tick` every SNAPSHOT_INTERVAL_S on a daemon thread until stopped."""

    def __init__(self, tick: Callable[[], None], interval_s: float = SNAPSHOT_INTERVAL_S) -> None:
        self._tick = tick
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiva-metrics-share", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        failing = False
        while not self._stopped.wait(self._interval_s):
            try:
                self._tick()
                failing = False
            except Exception:  # the thread's boundary: logged once per run of failures
                if not failing:
                    logger.exception("writing this worker's metrics snapshot failed")
                failing = True
