"""Throw-away PostgreSQL cluster (run as the `postgres` user) on a free loopback port."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from .ports import LOOPBACK, free_port, is_listening
from .processes import ManagedProcess

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INSTALL_HINT = (
    "apt-get install -y --no-install-recommends postgresql-15"
    " (server binaries in /usr/lib/postgresql/15/bin)"
)
OS_USER = "postgres"


def server_os_user() -> str | None:
    """The OS user to run the server as: `postgres` when we are root (it refuses root), else us."""
    return OS_USER if os.geteuid() == 0 else None


def _env() -> dict[str, str]:
    """Minimal environment for the server tools (C locale, no PG* leaking in)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}


class Postgres:
    """A private cluster in a world-readable tmp dir owned by `postgres`; server runs as our child.

    The server is the `postgres` binary itself started in the foreground as the postgres user
    (equivalent to `runuser -u postgres -- ...`, but the PID is our child's, so we stop and reap it
    by PID: SIGINT = fast shutdown). start() after stop() reuses the same port and data directory.
    """

    def __init__(
        self, bin_dir: Path = PG_BIN, host: str = LOOPBACK, user: str = "postgres"
    ) -> None:
        """Pick the port; nothing exists on disk until start()."""
        self.bin_dir = bin_dir
        self.host = host
        self.port = free_port(host)
        self.user = user
        self.database = "postgres"
        self.os_user = server_os_user()
        self.root = Path(tempfile.mkdtemp(prefix="aiva-pg-"))
        self._prepare_root()
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self._process = ManagedProcess(
            argv=self._argv(),
            log_path=self.log_path,
            env=_env(),
            cwd=self.root,
            user=self.os_user,
            stop_signal=signal.SIGINT,
            name="postgres",
        )

    def _prepare_root(self) -> None:
        """chmod 755 + chown postgres, so the server can create its data dir and socket there."""
        self.root.chmod(0o755)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _argv(self) -> list[str]:
        """Server argv: TCP on host:port only, unix socket in our dir, durability off for speed."""
        return [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "logging_collector=off",
        ]

    @property
    def dsn(self) -> str:
        """postgresql://postgres@127.0.0.1:PORT/postgres."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """PID of the postmaster (our child)."""
        return self._process.pid

    @property
    def running(self) -> bool:
        """True while the postmaster is alive."""
        return self._process.running

    def initdb(self, timeout: float = 60.0) -> None:
        """Create the cluster (trust auth, superuser postgres) unless it already exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            self.user,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        with (self.root / "initdb.log").open("wb") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_env(),
                cwd=self.root,
                user=self.os_user,
                group=self.os_user,
                extra_groups=[] if self.os_user else None,
                timeout=timeout,
            )
        if result.returncode != 0:
            text = (self.root / "initdb.log").read_text(errors="replace")
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{text[-3000:]}")

    def _ready(self) -> bool:
        """postmaster.pid names our PID with status 'ready' and the TCP port accepts."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        ours = bool(lines) and lines[0].strip() == str(self.pid)
        return (
            ours
            and len(lines) >= 8
            and lines[7].strip() == "ready"
            and is_listening(self.host, self.port)
        )

    def start(self, timeout: float = 30.0) -> None:
        """initdb if needed, start the server on our port and wait until it accepts connections."""
        self.initdb()
        self._process.start(self._ready, timeout)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Fast shutdown (SIGINT to the postmaster PID), SIGKILL of its group after timeout."""
        return self._process.stop(timeout)

    def kill(self) -> int | None:
        """Crash it: SIGKILL the postmaster and its backends (its own process group)."""
        return self._process.kill()

    def log_text(self) -> str:
        """Server log (all runs)."""
        return self._process.log_text()

    def cleanup(self) -> None:
        """Stop and remove the whole tmp dir (data, socket, logs)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
