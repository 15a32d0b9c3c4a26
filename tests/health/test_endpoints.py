"""Health endpoints in-process: statuses, probes, Kubernetes forms, IETF format, API key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

import aiva
from aiva.health import Outcome, check
from aiva.health.registry import CustomCheck
from aiva.settings import load_settings

NO_DEFAULT_CHECKS = {
    "AIVA_HEALTH__CHECKS__DISK__ENABLED": "false",
    "AIVA_HEALTH__CHECKS__MEMORY__ENABLED": "false",
    "AIVA_HEALTH__CHECKS__CPU__ENABLED": "false",
    "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING",
}


@contextmanager
def client(checks: Sequence[object] = (), **environ: str) -> Iterator[TestClient]:
    settings = load_settings({**NO_DEFAULT_CHECKS, **environ}, config_dir="/nonexistent").settings
    with TestClient(aiva.create_app(settings, checks=checks)) as test_client:  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while test_client.get("/health/startup").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        yield test_client


@check("cache", critical=False)
async def degraded_cache() -> Outcome:
    return Outcome.degraded("hit ratio low", hit_ratio=0.2)


@check("db", critical=True)
async def dead_db() -> Outcome:
    raise ConnectionRefusedError(111, "refused")


@check("optional", critical=False)
async def dead_optional() -> bool:
    return False


async def fine() -> bool:
    return True


def test_no_checks_is_healthy() -> None:
    with client() as c:
        response = c.get("/health")
    assert (response.status_code, response.json()["status"], response.json()["checks"]) == (
        200,
        "healthy",
        [],
    )


@pytest.mark.parametrize(
    ("checks", "status", "code"),
    [
        ([fine], "healthy", 200),
        ([fine, degraded_cache], "degraded", 200),
        ([fine, dead_optional], "degraded", 200),
        ([fine, dead_optional, dead_db], "unhealthy", 503),
    ],
)
def test_report_status_and_code(checks: list[object], status: str, code: int) -> None:
    with client(checks) as c:
        response = c.get("/health")
    body = response.json()
    assert (response.status_code, body["status"]) == (code, status)
    assert response.headers["cache-control"] == "no-store"
    assert {"timestamp", "uptime_seconds", "version", "checks"} <= set(body)
    for entry in body["checks"]:
        assert {
            "name",
            "status",
            "critical",
            "message",
            "duration_ms",
            "timestamp",
            "details",
        } <= set(entry)


def test_unknown_gives_503() -> None:
    @check("never", critical=True)
    async def never() -> Outcome:
        return Outcome(aiva.health.Status.UNKNOWN, "cannot tell")

    with client([never]) as c:
        response = c.get("/health")
    assert (response.status_code, response.json()["status"]) == (503, "unknown")


def test_liveness_never_depends_on_dependencies() -> None:
    with client([dead_db], AIVA_REDIS__URL="redis://127.0.0.1:1/0") as c:
        assert c.get("/health/live").status_code == 200
        assert c.get("/livez").status_code == 200
        assert c.get("/health/ready").status_code == 503
        assert c.get("/ready").status_code == 503
        report = c.get("/health").json()
    redis = next(x for x in report["checks"] if x["name"] == "redis")
    assert (redis["status"], redis["critical"], redis["message"]) == (
        "unhealthy",
        True,
        "connection refused",
    )


def test_kubernetes_style_probes() -> None:
    """The bodies the Kubernetes API server gives (k8s.io/apiserver healthz.go)."""
    with client([fine, dead_db, dead_optional]) as c:
        # On failure the checks are listed even without ?verbose, reasons withheld.
        bare = c.get("/readyz")
        assert (bare.status_code, bare.text) == (
            503,
            "[+]fine ok\n"
            "[-]db failed: reason withheld\n"
            "[-]optional failed: reason withheld\n"
            "readyz check failed\n",
        )
        verbose = c.get("/readyz?verbose")
        assert (verbose.status_code, verbose.text) == (
            503,
            "[+]fine ok\n"
            "[-]db failed: connection refused\n"
            "[-]optional failed: failed\n"
            "readyz check failed\n",
        )
        excluded = c.get("/readyz?verbose&exclude=db&exclude=nope&exclude=gone")
        assert (excluded.status_code, excluded.text) == (
            200,  # what is left fails only a non-critical check: degraded, still ready
            "[+]fine ok\n"
            "[+]db excluded: ok\n"
            "[-]optional failed: failed\n"
            'warn: some health checks cannot be excluded: no matches for "gone", "nope"\n'
            "readyz check passed\n",
        )
        assert c.get("/readyz?exclude=db").text == "ok"

        # /readyz/NAME: that check's own result, even a non-critical one.
        one = c.get("/readyz/fine")
        assert (one.status_code, one.text) == (200, "ok")
        assert c.get("/readyz/fine?verbose").text == "[+]fine ok\nreadyz check passed\n"
        db = c.get("/readyz/db")
        assert (db.status_code, db.text) == (503, "internal server error: connection refused\n")
        optional = c.get("/readyz/optional")
        assert (optional.status_code, optional.text) == (503, "internal server error: failed\n")
        assert c.get("/readyz/optional?verbose").text == (
            "[-]optional failed: failed\nreadyz check failed\n"
        )
        assert c.get("/readyz/nope").status_code == 404
        assert c.get("/livez/db").status_code == 404  # db is not in the live probe

        live = c.get("/livez")
        assert (live.status_code, live.text) == (200, "ok")
        assert live.headers["cache-control"] == "no-store"
        assert c.get("/livez?verbose").text == "livez check passed\n"
        assert c.get("/livez?verbose&exclude=x").text == (
            'warn: some health checks cannot be excluded: no matches for "x"\nlivez check passed\n'
        )


def test_kubernetes_style_live_checks() -> None:
    @check("loop", critical=True, probes=("live",))
    async def loop() -> bool:
        return True

    @check("stuck", critical=True, probes=("live", "ready"))
    async def stuck() -> Outcome:
        raise RuntimeError("worker stuck at postgresql://app:CANARY1@db/x")

    with client([loop, stuck]) as c:
        assert (c.get("/livez").status_code, c.get("/livez").text) == (
            503,
            "[+]loop ok\n[-]stuck failed: reason withheld\nlivez check failed\n",
        )
        assert c.get("/livez?verbose").text == (
            "[+]loop ok\n[-]stuck failed: worker stuck at postgresql://app:****@db/x\n"
            "livez check failed\n"
        )
        assert c.get("/livez?exclude=stuck").text == "ok"
        assert c.get("/livez/loop").text == "ok"


def test_ietf_health_json_on_request() -> None:
    with client([fine, degraded_cache, dead_db]) as c:
        response = c.get("/health", headers={"Accept": "application/health+json"})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/health+json")
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["fine:status"][0]["status"] == "pass"
    assert body["checks"]["cache:status"][0]["status"] == "warn"
    assert body["checks"]["db:status"][0]["status"] == "fail"
    assert body["checks"]["db:status"][0]["output"] == "connection refused"
    assert set(body["checks"]["fine:status"][0]) == {
        "componentType",
        "observedValue",
        "observedUnit",
        "status",
        "time",
        "output",
    }


def test_api_key_guards_details_and_metrics_not_probes() -> None:
    with client([dead_db], AIVA_SECURITY__API_KEY="k3y") as c:
        bare = c.get("/health")
        assert (bare.status_code, bare.json()) == (503, {"status": "unhealthy"})
        full = c.get("/health", headers={"X-API-Key": "k3y"})
        assert full.json()["checks"][0]["message"] == "connection refused"
        assert c.get("/health", headers={"X-API-Key": "wrong"}).json() == {"status": "unhealthy"}
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": "k3y"}).status_code == 200
        # Reasons need the key: without it they are withheld, even with ?verbose.
        assert (
            c.get("/readyz?verbose").text == "[-]db failed: reason withheld\nreadyz check failed\n"
        )
        assert c.get("/readyz/db").text == "internal server error: reason withheld\n"
        keyed = c.get("/readyz?verbose", headers={"X-API-Key": "k3y"})
        assert keyed.text == "[-]db failed: connection refused\nreadyz check failed\n"
        keyed_one = c.get("/readyz/db", headers={"X-API-Key": "k3y"})
        assert keyed_one.text == "internal server error: connection refused\n"
        assert c.get("/health/live").status_code == 200
        assert c.get("/health/ready").status_code == 503


def test_draining_turns_readiness_503_at_once() -> None:
    with client([fine]) as c:
        assert c.get("/health/ready").status_code == 200
        c.app_state["aiva"].health.draining = True  # what SIGTERM does (see aiva.server)
        assert c.get("/health/ready").status_code == 503
        assert c.get("/readyz?verbose").text == (
            "[+]fine ok\n[-]shutdown failed: draining\nreadyz check failed\n"
        )
        assert c.get("/readyz").text == (
            "[+]fine ok\n[-]shutdown failed: reason withheld\nreadyz check failed\n"
        )
        assert c.get("/health/live").status_code == 200


def test_custom_checks_may_be_plain_functions() -> None:
    def plain() -> bool:
        return True

    @check("plain-cache", critical=False)
    def plain_cache() -> Outcome:
        return Outcome.degraded("hit ratio low")

    with client([plain, plain_cache]) as c:
        body = c.get("/health").json()
    statuses = {x["name"]: (x["status"], x["message"]) for x in body["checks"]}
    assert statuses == {"plain": ("healthy", "ok"), "plain-cache": ("degraded", "hit ratio low")}


def test_custom_checks_must_be_callable() -> None:
    settings = load_settings({}, config_dir="/x").settings
    with pytest.raises(TypeError, match="is not callable"):
        aiva.create_app(settings, checks=["redis://cache"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="is not callable"):
        check("x")(True)  # type: ignore[arg-type]
    assert isinstance(check("x")(fine), CustomCheck)


def test_startup_probe_waits_for_the_first_round() -> None:
    @check("slow-start", critical=False)
    async def slow_start() -> bool:
        await asyncio.sleep(1.0)
        return True

    settings = load_settings(NO_DEFAULT_CHECKS, config_dir="/nonexistent").settings
    with TestClient(aiva.create_app(settings, checks=[slow_start])) as c:
        assert c.get("/health/startup").status_code == 503
        assert c.get("/health/ready").status_code == 503  # unknown until evaluated
        assert c.get("/health/live").status_code == 200
        deadline = time.monotonic() + 5
        while c.get("/health/startup").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.get("/health/ready").status_code == 200


@pytest.mark.fast_layer("uvicorn_lifespan_state")
def test_sigterm_marks_the_app_draining_before_uvicorn_drains() -> None:
    import signal
    from types import SimpleNamespace

    import uvicorn

    from aiva.server import _Server

    runner = SimpleNamespace(draining=False)
    server = _Server(uvicorn.Config(app=lambda *a: None))  # type: ignore[arg-type]
    server.lifespan = SimpleNamespace(state={"aiva": SimpleNamespace(health=runner)})  # type: ignore[assignment]
    server.handle_exit(signal.SIGTERM, None)
    assert runner.draining is True
    assert server.should_exit is True
