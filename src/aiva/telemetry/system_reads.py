"""The psutil reads behind aiva's process and system instruments, as observations.

Attribute keys and values are those of the current semantic conventions; which
instrument each read feeds, with its name, kind and unit, is aiva.telemetry.system.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import psutil
from opentelemetry.metrics import Observation

# Attribute keys of the conventions (checked against the package by the conformance tests).
CPU_MODE = "cpu.mode"
CPU_LOGICAL_NUMBER = "cpu.logical_number"
SYSTEM_MEMORY_STATE = "system.memory.state"
SYSTEM_DEVICE = "system.device"
DISK_IO_DIRECTION = "disk.io.direction"
NETWORK_IO_DIRECTION = "network.io.direction"
NETWORK_INTERFACE_NAME = "network.interface.name"
PROCESS_CONTEXT_SWITCH_TYPE = "process.context_switch.type"
CPYTHON_GC_GENERATION = "cpython.gc.generation"

# cpu.mode of system.cpu.*: psutil's fields (Linux names; other platforms have fewer)
# behind each mode. guest and guest_nice are left out: Linux counts them in user and
# nice already.
CPU_MODES: dict[str, tuple[str, ...]] = {
    "user": ("user",),
    "nice": ("nice",),
    "system": ("system",),
    "idle": ("idle",),
    "iowait": ("iowait",),
    "interrupt": ("irq", "softirq"),
    "steal": ("steal",),
}

# Utilization is the share of the time since the previous sample. Two readers
# collecting moments apart (a scrape just after an OTLP push) would divide a few clock
# ticks (10 ms each on Linux) by a few milliseconds: within this window the previous
# result is repeated instead.
MIN_WINDOW_S = 1.0


class Windowed:
    """A utilization computed from the previous sample, at most once per MIN_WINDOW_S."""

    def __init__(
        self,
        sample: Callable[[], Any],
        compute: Callable[[Any, Any, float], list[Observation]],
    ) -> None:
        self._sample = sample
        self._compute = compute
        # Collections can run at once on two readers' threads.
        self._lock = threading.Lock()
        self._baseline = sample()
        self._since = time.monotonic()
        self._last: list[Observation] = []

    def observe(self) -> list[Observation]:
        with self._lock:
            now = time.monotonic()
            if self._last and now - self._since < MIN_WINDOW_S:
                return self._last
            current = self._sample()
            observed = self._compute(self._baseline, current, now - self._since)
            self._baseline, self._since, self._last = current, now, observed
            return observed


class Readings:
    """What the callbacks read: this process, and the windows behind the utilizations."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.cpu_modes = _platform_modes()
        self.process_cpu = Windowed(self.process.cpu_times, _process_cpu_share)
        self.system_cpu = Windowed(
            partial(psutil.cpu_times, percpu=True), partial(_system_cpu_share, self.cpu_modes)
        )


# Process metrics.


def process_cpu_time(readings: Readings) -> list[Observation]:
    times = readings.process.cpu_times()
    return [
        Observation(times.user, {CPU_MODE: "user"}),
        Observation(times.system, {CPU_MODE: "system"}),
    ]


def process_cpu_utilization(readings: Readings) -> list[Observation]:
    return readings.process_cpu.observe()


def _process_cpu_share(before: Any, after: Any, elapsed_s: float) -> list[Observation]:
    # The conventions divide by the CPUs available to the process, not the machine's.
    capacity = elapsed_s * _cpus_available()
    if capacity <= 0:
        return []
    return [
        Observation(max(0.0, after.user - before.user) / capacity, {CPU_MODE: "user"}),
        Observation(max(0.0, after.system - before.system) / capacity, {CPU_MODE: "system"}),
    ]


def _cpus_available() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every CPU
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def process_memory_usage(readings: Readings) -> list[Observation]:
    return [Observation(readings.process.memory_info().rss)]


def process_memory_virtual(readings: Readings) -> list[Observation]:
    return [Observation(readings.process.memory_info().vms)]


def process_threads(readings: Readings) -> list[Observation]:
    return [Observation(readings.process.num_threads())]


def process_file_descriptors(readings: Readings) -> list[Observation]:
    return [Observation(readings.process.num_fds())]


def process_context_switches(readings: Readings) -> list[Observation]:
    switches = readings.process.num_ctx_switches()
    return [
        Observation(switches.voluntary, {PROCESS_CONTEXT_SWITCH_TYPE: "voluntary"}),
        Observation(switches.involuntary, {PROCESS_CONTEXT_SWITCH_TYPE: "involuntary"}),
    ]


def process_uptime(readings: Readings) -> list[Observation]:
    return [Observation(time.time() - readings.process.create_time())]


def gc_collections(readings: Readings) -> list[Observation]:
    return [
        Observation(stats["collections"], {CPYTHON_GC_GENERATION: generation})
        for generation, stats in enumerate(gc.get_stats())
    ]


# System metrics.


def _mode_seconds(times: Any, fields: Sequence[str]) -> float:
    return float(sum(getattr(times, field, 0.0) for field in fields))


def _platform_modes() -> dict[str, tuple[str, ...]]:
    """The cpu.mode values this platform's psutil has fields for."""
    fields = set(psutil.cpu_times()._fields)
    return {mode: names for mode, names in CPU_MODES.items() if fields.intersection(names)}


def system_cpu_time(readings: Readings) -> list[Observation]:
    return [
        Observation(_mode_seconds(times, fields), {CPU_MODE: mode, CPU_LOGICAL_NUMBER: number})
        for number, times in enumerate(psutil.cpu_times(percpu=True))
        for mode, fields in readings.cpu_modes.items()
    ]


def system_cpu_utilization(readings: Readings) -> list[Observation]:
    return readings.system_cpu.observe()


def _system_cpu_share(
    modes: Mapping[str, Sequence[str]], before: Any, after: Any, elapsed_s: float
) -> list[Observation]:
    # Each CPU's modes add up to its elapsed time, so each mode's share of their sum
    # is its utilization (what psutil.cpu_times_percent computes, without the state it
    # shares with every other caller in the process, the cpu health check among them).
    observed: list[Observation] = []
    for number, (old, new) in enumerate(zip(before, after, strict=False)):
        spent = {
            mode: max(0.0, _mode_seconds(new, fields) - _mode_seconds(old, fields))
            for mode, fields in modes.items()
        }
        total = sum(spent.values())
        if total > 0:
            observed += [
                Observation(seconds / total, {CPU_MODE: mode, CPU_LOGICAL_NUMBER: number})
                for mode, seconds in spent.items()
            ]
    return observed


def memory_states(memory: Any) -> dict[str, int]:
    """psutil.virtual_memory() as system.memory.state values that add up to the total.

    psutil's own `used` is total minus available, which overlaps cached and buffers;
    the conventions' states partition system.memory.limit.
    """
    states = {
        "free": int(memory.free),
        "buffers": int(getattr(memory, "buffers", 0)),  # Linux and BSD only
        "cached": int(getattr(memory, "cached", 0)),
    }
    states["used"] = max(0, int(memory.total) - sum(states.values()))
    return states


def system_memory_usage(readings: Readings) -> list[Observation]:
    states = memory_states(psutil.virtual_memory())
    return [Observation(value, {SYSTEM_MEMORY_STATE: state}) for state, value in states.items()]


def system_memory_limit(readings: Readings) -> list[Observation]:
    return [Observation(psutil.virtual_memory().total)]


def system_memory_utilization(readings: Readings) -> list[Observation]:
    memory = psutil.virtual_memory()
    return [
        Observation(value / memory.total, {SYSTEM_MEMORY_STATE: state})
        for state, value in memory_states(memory).items()
    ]


def system_network_io(readings: Readings) -> list[Observation]:
    interfaces = psutil.net_io_counters(pernic=True) or {}
    return [
        Observation(value, {NETWORK_INTERFACE_NAME: name, NETWORK_IO_DIRECTION: direction})
        for name, counters in interfaces.items()
        for direction, value in (
            ("transmit", counters.bytes_sent),
            ("receive", counters.bytes_recv),
        )
    ]


def system_disk_io(readings: Readings) -> list[Observation]:
    disks = psutil.disk_io_counters(perdisk=True) or {}  # None where the OS has no counters
    return [
        Observation(value, {SYSTEM_DEVICE: name, DISK_IO_DIRECTION: direction})
        for name, counters in disks.items()
        for direction, value in (("read", counters.read_bytes), ("write", counters.write_bytes))
    ]
