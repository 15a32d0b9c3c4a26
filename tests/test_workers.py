"""`aiva serve --workers 2`: every worker is aiva's server (readiness 503 at SIGTERM,
in-flight requests finished, telemetry flushed, heap frozen, its own instance id), a
worker that dies is replaced, and SIGTERM or SIGINT to the parent ends it all with 0.

Real processes throughout (tests/apps/workers_service.py, a real rotel). Which worker
answered is what the worker itself says (its pid); every request goes over a fresh
connection so that both workers take some. Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any

import httpx
import psutil
import pytest
from uvicorn.supervisors.multiprocess import Multiprocess

from aiva.fast.uvicorn_workers import WORKER_STARTING_METHODS, AivaMultiprocess, AivaWorker
from aiva.heap import SERVER_YOUNG_THRESHOLD
from infra.rotel import Rotel
from infra.service import REPO_ROOT, SRC_DIR, AivaService
from infra.wait import wait_for

APP_ARGS = ["tests.apps.workers_service:app", "--workers", "2"]
ENV = {
    # `tests.apps...` importable by the service and its workers.
    "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(REPO_ROOT)]),
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_SERVER__GRACEFUL_TIMEOUT_S": "10",
    "AIVA_TELEMETRY__LOGS__LEVEL": "INFO",
}
FRESH = {"Connection": "close"}  # a new connection a request: the kernel picks the worker
DRAIN_BOUND_S = 0.1  # SIGTERM to the parent, to readiness 503 in every worker
EXIT_BOUND_S = 30.0
NOT_CLEAN = (
    "ended with exit code"  # aiva.fast.uvicorn_workers' line for a worker that did not end with 0
)


def _serve(aiva_service: Callable[..., AivaService], **env: str) -> AivaService:
    service = aiva_service(env={**ENV, **env}, args=APP_ARGS, ready_path="/whoami")
    # Both workers up (the readiness poll saw one): each logs its start.
    wait_for(lambda: service.log_text().count(" started (environment ") >= 2, 30)
    return service


def _whoami(client: httpx.Client) -> dict[str, int]:
    answer = client.get("/whoami", headers=FRESH)
    assert answer.status_code == 200, answer.text
    body: dict[str, int] = answer.json()
    return body


def _workers(service: AivaService, count: int = 2) -> dict[int, int]:
    """{pid: freeze count} of `count` workers, as they answer (200 requests at most);
    each is a child of the service's process."""
    seen: dict[int, int] = {}
    with service.client() as client:
        for _ in range(200):
            body = _whoami(client)
            seen[body["pid"]] = body["freeze_count"]
            if sys.version_info < (3, 14):  # each worker starts as `aiva serve` does
                assert body["gc_young_threshold"] == SERVER_YOUNG_THRESHOLD, body
            if len(seen) == count:
                break
    assert len(seen) == count, f"{len(seen)} workers answered 200 requests: {seen}"
    children = {child.pid for child in psutil.Process(service.pid).children()}
    assert set(seen) <= children, (seen, children)
    return seen


@dataclass
class Outcome:
    """One request of the background load: when it was sent, and its pid or error."""

    sent: float
    pid: int | None = None
    error: str = ""


@contextmanager
def _load(service: AivaService, threads: int = 2) -> Iterator[list[Outcome]]:
    """Threads sending GET /whoami over fresh connections until the block ends or the
    service is gone (each at most 5,000 requests); yields every outcome, in order."""
    stop = threading.Event()
    outcomes: list[Outcome] = []

    def send() -> None:
        with service.client(timeout=10) as client:
            for _ in range(5_000):
                if stop.is_set() or not service.running:
                    return
                outcome = Outcome(time.monotonic())
                outcomes.append(outcome)
                try:
                    outcome.pid = _whoami(client)["pid"]
                except (httpx.HTTPError, AssertionError) as error:
                    outcome.error = repr(error)
                    time.sleep(0.01)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(threads)]
    for sender in senders:
        sender.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=15)


@dataclass
class Watch:
    """A /watch-drain request in flight: the worker that took it, then how it ended."""

    pid: int | None = None
    status: int | None = None
    last: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    answered: threading.Event = field(default_factory=threading.Event)


def _watch(service: AivaService, watch: Watch) -> None:
    try:
        with (
            service.client(timeout=30) as client,
            client.stream("GET", "/watch-drain?s=30", headers=FRESH) as answer,
        ):
            watch.status = answer.status_code
            lines = answer.iter_lines()
            watch.pid = int(next(lines))
            watch.answered.set()
            watch.last = json.loads(next(lines))
    except (httpx.HTTPError, StopIteration, ValueError) as error:
        watch.error = repr(error)
    finally:
        watch.answered.set()


def _watch_every_worker(
    service: AivaService, pids: set[int]
) -> tuple[list[Watch], list[threading.Thread]]:
    """/watch-drain requests in flight until each worker has one (20 at most)."""
    watches: list[Watch] = []
    threads: list[threading.Thread] = []
    for _ in range(20):
        watch = Watch()
        thread = threading.Thread(target=_watch, args=(service, watch), daemon=True)
        thread.start()
        watches.append(watch)
        threads.append(thread)
        assert watch.answered.wait(10), "a /watch-drain request got no first line in 10 s"
        assert watch.pid is not None, watch.error
        if {w.pid for w in watches} >= pids:
            break
    assert {w.pid for w in watches} == pids, [w.pid for w in watches]
    return watches, threads


@pytest.mark.fast_layer("uvicorn_supervisor", "uvicorn_lifespan_state")
def test_sigterm_under_load_drains_every_worker_and_flushes_its_spans(
    aiva_service: Callable[..., AivaService],
    rotel: Callable[[], Rotel],
    record_property: Callable[[str, object], None],
) -> None:
    collector = rotel()
    service = _serve(
        aiva_service,
        AIVA_TELEMETRY__OTLP__ENDPOINT=collector.grpc_endpoint,
        OTEL_RESOURCE_ATTRIBUTES="service.instance.id=pod-a",
    )
    pids = set(_workers(service))
    with _load(service) as outcomes:
        watches, threads = _watch_every_worker(service, pids)
        time.sleep(0.5)
        sent = time.monotonic()
        service.signal(signal.SIGTERM)
        code = service.wait(EXIT_BOUND_S)
    for thread in threads:
        thread.join(timeout=10)
    log = service.log_text()
    assert code == 0, log[-3000:]

    # Readiness (the draining flag it answers 503 on) turned in every worker, at once,
    # while the requests were in flight; each then ran to its end.
    for watch in watches:
        assert (watch.status, watch.error) == (200, ""), watch
        assert watch.last["pid"] == watch.pid, watch
        seen = watch.last["draining_seen"]
        assert seen is not None, f"worker {watch.pid} never saw the app draining"
        assert seen - sent < DRAIN_BOUND_S, f"worker {watch.pid}: {seen - sent:.3f} s"
    slowest = max(w.last["draining_seen"] for w in watches) - sent
    record_property("sigterm_to_draining_s", round(slowest, 4))
    print(f"SIGTERM to draining, slowest of {len(watches)} requests: {slowest * 1000:.1f} ms")
    # Under load: nothing sent before the signal failed; after it, the listening socket
    # closes (uvicorn), so a new connection may be refused.
    before = [o for o in outcomes if o.sent < sent]
    assert before and all(o.pid in pids for o in before), [o for o in before if o.error]
    assert {o.pid for o in before} == pids

    # Both workers ended cleanly and flushed: the last requests' spans reach the
    # collector, each under its own worker's instance id.
    assert NOT_CLEAN not in log, log[-3000:]
    assert log.count("stopping: flushing telemetry") == 2, log[-3000:]
    traces = {w.last["trace_id"]: w.pid for w in watches}

    def server_spans() -> dict[str, dict[str, Any]]:
        found = {
            span["trace_id"]: span
            for span in collector.spans()
            if span["kind"] == "SERVER" and span["trace_id"] in traces
        }
        return found if len(found) == len(traces) else {}

    spans = wait_for(server_spans, 10, message=lambda: f"spans of {traces} at rotel")
    instance_ids = set()
    for trace_id, pid in traces.items():
        resource = spans[trace_id]["resource"]
        assert str(resource["process.pid"]) == str(pid), resource
        assert resource["service.instance.id"] == f"pod-a-{pid}", resource
        instance_ids.add(resource["service.instance.id"])
    assert len(instance_ids) == 2, instance_ids


@pytest.mark.fast_layer("uvicorn_supervisor", "uvicorn_lifespan_state")
def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = _serve(aiva_service)
    pids = set(_workers(service))
    victim, survivor = sorted(pids)
    threads = 2
    with _load(service, threads) as outcomes:
        time.sleep(0.5)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replacement() -> int | None:
            return next((o.pid for o in list(outcomes) if o.pid not in (None, *pids)), None)

        new_pid = wait_for(replacement, 30, message="no new worker answered in 30 s")
        time.sleep(0.5)
    after = [o for o in outcomes if o.sent >= killed]
    failed = [o for o in outcomes if o.error]
    # At most the requests in flight on the killed worker (one a thread) were lost.
    assert len(failed) <= threads, failed
    assert any(o.pid == survivor for o in after), "the surviving worker answered nothing"
    assert new_pid not in pids
    # The replacement is aiva's server too (its heap frozen after start-up).
    assert _workers(service)[new_pid] > 0
    assert service.terminate(EXIT_BOUND_S) == 0
    log = service.log_text()
    assert log.count(NOT_CLEAN) == 1, log[-3000:]  # the SIGKILL, said once
    assert f"worker [{victim}] ended with exit code -9" in log


@pytest.mark.fast_layer("uvicorn_supervisor", "uvicorn_lifespan_state")
def test_every_worker_freezes_its_heap_and_sigint_ends_them_cleanly(
    aiva_service: Callable[..., AivaService],
) -> None:
    service = _serve(aiva_service)
    workers = _workers(service)
    assert all(count > 0 for count in workers.values()), workers
    service.signal(signal.SIGINT)
    assert service.wait(EXIT_BOUND_S) == 0
    log = service.log_text()
    assert NOT_CLEAN not in log, log[-3000:]
    assert log.count("stopping: flushing telemetry") == 2, log[-3000:]


def test_the_supervisor_starts_only_aiva_workers() -> None:
    """Every uvicorn supervisor method that builds a `Process` is one aiva.fast.uvicorn_workers
    rebinds (an upgrade adding one fails here), and builds an AivaWorker."""
    starting = {
        name
        for name, member in vars(Multiprocess).items()
        if isinstance(member, FunctionType) and "Process" in member.__code__.co_names
    }
    assert starting == set(WORKER_STARTING_METHODS)
    for name in starting:
        method = getattr(
            AivaMultiprocess, "_keep_alive" if name == "keep_subprocess_alive" else name
        )
        assert method.__globals__["Process"] is AivaWorker, name
