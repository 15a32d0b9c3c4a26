"""Private Prometheus scraping given targets every second, queried through its HTTP API."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .ports import LOOPBACK, free_port
from .processes import ManagedProcess
from .wait import wait_for

INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus"


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: address 'host:port', metrics path and job name."""

    address: str
    metrics_path: str = "/metrics"
    job: str = ""


TargetSpec = str | tuple[str, str] | ScrapeTarget


def as_target(spec: TargetSpec, index: int) -> ScrapeTarget:
    """'host:port' | ('host:port', '/path') | ScrapeTarget -> ScrapeTarget with a job name."""
    if isinstance(spec, str):
        target = ScrapeTarget(spec)
    elif isinstance(spec, tuple):
        target = ScrapeTarget(spec[0], spec[1])
    else:
        target = spec
    return (
        target
        if target.job
        else ScrapeTarget(target.address, target.metrics_path, f"target{index}")
    )


def _q(text: str) -> str:
    """A YAML-safe quoted scalar (JSON strings are YAML)."""
    return json.dumps(text)


def render_config(targets: Sequence[ScrapeTarget], rule_files: Sequence[Path] = ()) -> str:
    """prometheus.yml: 1s scrape/evaluation interval, one job per target."""
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
    ]
    if rule_files:
        lines += ["rule_files:"] + [f"  - {_q(str(p))}" for p in rule_files]
    lines.append("scrape_configs:" if targets else "scrape_configs: []")
    for t in targets:
        lines += [
            f"  - job_name: {_q(t.job)}",
            f"    metrics_path: {_q(t.metrics_path)}",
            "    static_configs:",
            f"      - targets: [{_q(t.address)}]",
        ]
    return "\n".join(lines) + "\n"


class Prometheus:
    """prometheus --config.file --storage.tsdb.path --web.listen-address=127.0.0.1:PORT."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        targets: Sequence[TargetSpec] = (),
        scrape_self: bool = False,
        exemplars: bool = False,
        rule_files: Sequence[Path] = (),
        host: str = LOOPBACK,
    ) -> None:
        """Pick the port, write prometheus.yml; scrape_self adds job 'prometheus' (itself)."""
        self.host = host
        self.port = free_port(host)
        self.workdir = workdir
        self.targets = [as_target(spec, i) for i, spec in enumerate(targets)]
        if scrape_self:
            self.targets.append(ScrapeTarget(self.address, "/metrics", "prometheus"))
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(render_config(self.targets, rule_files), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.address}",
        ] + (["--enable-feature=exemplar-storage"] if exemplars else [])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
        self._process = ManagedProcess(
            argv=argv, log_path=self.log_path, env=env, cwd=workdir, name="prometheus"
        )

    @property
    def address(self) -> str:
        """host:port it listens on."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://{self.address}"

    @property
    def pid(self) -> int | None:
        """PID of the server."""
        return self._process.pid

    def _ready(self) -> bool:
        """GET /-/ready answers 200."""
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait for /-/ready (the first scrape sample comes about 5-6 s later)."""
        self._process.start(self._ready, timeout)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM by PID (SIGKILL after timeout); reaped."""
        return self._process.stop(timeout)

    def log_text(self) -> str:
        """Server log."""
        return self._process.log_text()

    def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET /api/v1/<path>; the 'data' member of a successful answer."""
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5.0)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} failed ({response.status_code}): {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; the result list ([{'metric': {...}, 'value': [ts, 'v']}, ...])."""
        data = self._api("query", {"query": promql})
        result = data.get("result", [])
        return result if isinstance(result, list) else [result]

    def query_exemplars(self, promql: str, start: float, end: float) -> list[dict[str, Any]]:
        """Exemplars of series matching promql between start and end (unix seconds)."""
        return list(
            self._api("query_exemplars", {"query": promql, "start": str(start), "end": str(end)})
        )

    def active_targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with health, lastError, scrapeUrl."""
        return list(self._api("targets").get("activeTargets", []))

    def _targets_summary(self) -> str:
        """Target health for timeout messages."""
        try:
            return "; ".join(
                f"{t.get('scrapeUrl')} health={t.get('health')} error={t.get('lastError')!r}"
                for t in self.active_targets()
            )
        except (httpx.HTTPError, RuntimeError) as exc:
            return f"targets unavailable: {exc}"

    def wait_for_query(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll the query until its result is non-empty; raise WaitTimeout listing target health."""
        return wait_for(
            lambda: self.query(promql),
            timeout,
            interval=0.25,
            message=lambda: f"{promql!r} stayed empty; targets: {self._targets_summary()}",
        )
