"""The service under test (`python -m aiva serve`) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from .ports import LOOPBACK, free_port
from .processes import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"
_LEAKY_PREFIXES = ("AIVA_", "OTEL_")
# The suite's switch for running everything on the plain pipeline (tests/conftest.py):
# SUITE_FAST_PATH=off gives every service telemetry.fast_path: off.
SUITE_FAST_PATH = "SUITE_FAST_PATH"


def service_env(env: Mapping[str, str], config_dir: Path) -> dict[str, str]:
    """Our environ minus AIVA_*/OTEL_*, src/ on PYTHONPATH, then env, then AIVA_CONFIG_DIR."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    base["PYTHONUNBUFFERED"] = "1"
    if os.environ.get(SUITE_FAST_PATH) == "off":
        base["AIVA_TELEMETRY__FAST_PATH"] = "off"
    base.update(env)
    base["AIVA_CONFIG_DIR"] = str(config_dir)
    return base


def answers(url: str) -> bool:
    """GET url answers 200 (a readiness poll for services the tests start)."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class AivaService:
    """`python -m aiva serve --host 127.0.0.1 --port PORT [args]`; ready when GET / is 200."""

    def __init__(
        self,
        workdir: Path,
        config_dir: Path,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        host: str = LOOPBACK,
        ready_path: str = "/",
    ) -> None:
        """Pick the port and build argv/env; nothing runs until start()."""
        self.host = host
        self.ready_path = ready_path
        self.port = port or free_port(host)
        self.workdir = workdir
        self.config_dir = config_dir
        self.log_path = workdir / "aiva.log"
        self.argv = [
            sys.executable,
            "-m",
            "aiva",
            "serve",
            "--host",
            host,
            "--port",
            str(self.port),
            *extra_args,
        ]
        self.env = service_env(env or {}, config_dir)
        self._process = ManagedProcess(
            argv=self.argv, log_path=self.log_path, env=self.env, cwd=workdir, name="aiva"
        )

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the service process."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the service process is alive."""
        return self._process.running

    @property
    def returncode(self) -> int | None:
        """Exit code once it exited, else None."""
        return self._process.returncode

    def _ready(self) -> bool:
        """GET ready_path (/ by default) answers 200."""
        return answers(self.base_url + self.ready_path)

    def spawn(self) -> None:
        """Start without waiting (for tests of start-up failures: then wait(timeout))."""
        self._process.spawn()

    def start(self, timeout: float = 30.0) -> None:
        """Start, wait until GET / answers 200; raises with the log tail on early exit/timeout."""
        self._process.start(self._ready, timeout)

    def wait(self, timeout: float) -> int | None:
        """Wait up to timeout for it to exit by itself; exit code or None."""
        return self._process.wait(timeout)

    def signal(self, signum: int) -> None:
        """Send a signal to the service PID."""
        self._process.signal(signum)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to timeout for a graceful exit; its exit code (None: still running)."""
        self._process.signal(signal.SIGTERM)
        return self._process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL after timeout; reaped. Returns the exit code."""
        return self._process.stop(timeout)

    def log_text(self) -> str:
        """Everything the service wrote to stdout/stderr, in whole lines while it runs.

        The service writes its console lines from a queue thread, so a read can land in the
        middle of a line; while it runs, an unfinished last line is left for the next read.
        """
        text = self._process.log_text()
        if not self._process.running:
            return text
        return text[: text.rfind("\n") + 1]

    def client(self, timeout: float = 5.0) -> httpx.Client:
        """An httpx.Client bound to base_url (use it as a context manager)."""
        return httpx.Client(base_url=self.base_url, timeout=timeout)
