"""Start a subprocess logging to a file, wait for readiness with a deadline, stop it by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ReadyCheck = Callable[[], bool]


class ProcessError(RuntimeError):
    """A managed process did not become ready (timeout or early exit)."""


def tail(path: Path, lines: int = 40) -> str:
    """Last lines of a text file ('' when missing)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ManagedProcess:
    """One subprocess owned by PID: output appended to log_path; stop_signal, then SIGKILL.

    start() may be called again after stop() (same argv, same log file appended), which is
    how components are restarted on the same port for outage tests.
    """

    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    name: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def label(self) -> str:
        """Human name used in error messages."""
        return self.name or Path(self.argv[0]).name

    @property
    def pid(self) -> int | None:
        """PID of the current run (None when never started)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the current run has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit code of the last run, None while running or never started."""
        return self._proc.poll() if self._proc is not None else None

    def log_text(self) -> str:
        """Everything the process wrote so far (all runs)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the log."""
        return tail(self.log_path, lines)

    def spawn(self) -> None:
        """Start the process without waiting for readiness."""
        if self.running:
            raise ProcessError(f"{self.label} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                start_new_session=True,
            )

    def wait_ready(self, ready: ReadyCheck, timeout: float, interval: float = 0.05) -> None:
        """Poll ready() until True; on early exit or deadline: stop, raise with the log tail."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                self._fail(f"{self.label} exited early with code {self.returncode}")
            if ready():
                return
            if time.monotonic() >= deadline:
                self._fail(f"{self.label} not ready within {timeout:.1f}s")
            time.sleep(interval)

    def start(self, ready: ReadyCheck, timeout: float = 15.0) -> None:
        """Spawn and wait until ready."""
        self.spawn()
        self.wait_ready(ready, timeout)

    def _fail(self, reason: str) -> None:
        """Stop, then raise ProcessError carrying the log tail."""
        self.stop()
        raise ProcessError(
            f"{reason}; argv={list(self.argv)}\n--- tail of {self.log_path} ---\n{self.log_tail()}"
        )

    def wait(self, timeout: float) -> int | None:
        """Wait up to timeout for the run to exit; its exit code, or None if still running."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, signum: int) -> None:
        """Send signum to our PID only (no-op if it already exited)."""
        if self.running and self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signum)

    def kill(self) -> int | None:
        """SIGKILL our PID and its process group (it leads its own session), then reap."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self._proc.kill()
        return self._proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int | None:
        """stop_signal to our PID, wait up to timeout, then SIGKILL; reaps; the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self.signal(self.stop_signal)
            if self.wait(timeout) is None:
                return self.kill()
        return self._proc.wait(timeout=10)
