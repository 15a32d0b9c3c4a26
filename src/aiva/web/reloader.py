"""The settings reloader: watches the settings files and SIGHUP, applies what can change live."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import watchfiles
from opentelemetry.metrics import Counter

from aiva.errors import Problem, SettingsError
from aiva.settings import LoadedSettings, Settings, load_settings
from aiva.settings.layers import FILE_LAYERS, FILE_SUFFIXES
from aiva.settings.reload import changes, describe_changes, digest, is_live, with_live_keys

logger = logging.getLogger(__name__)

# Editors' bursts of events (temp file, rename, truncate + write) make one reload: the
# watcher yields once no new event came for STEP_MS (so a truncate and a write up to
# that far apart group), and at the latest DEBOUNCE_MS after the first event.
STEP_MS = 250
DEBOUNCE_MS = 600
# A file that does not parse may be half written: read it once more after this pause.
REPARSE_DELAY_S = 0.3


@dataclass
class LiveSettings:
    """The settings in force now, and when and what they were loaded from."""

    current: Settings
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = self.digest or digest(self.current)


class SettingsReloader:
    """Reloads every layer on a file change or SIGHUP; applies live keys, refuses bad edits."""

    def __init__(
        self,
        source: LoadedSettings,
        environ: Mapping[str, str],
        live: LiveSettings,
        apply: Callable[[Settings], None],
        reloads: Counter,
    ) -> None:
        self._env = source.env
        self._folder = source.config_dir
        self._environ = dict(environ)
        self._live = live
        self._apply = apply
        self._reloads = reloads
        self._warned: dict[str, object] = {}  # restart-only keys already logged, by value
        # Files already empty when last loaded were meant so; one emptied since may be half
        # written (truncate, then write).
        self._meant_empty = {p.name for p in self._empty_files()}
        for result in ("applied", "rejected", "unchanged"):
            reloads.add(0, {"result": result})  # the series exist from start-up

    async def run(self) -> None:
        """Until cancelled: one reload per burst of file events, one per SIGHUP."""
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, hangup.set)
            listening = True
        except (ValueError, RuntimeError, NotImplementedError):
            # Not the main thread (an in-process test client) or no SIGHUP here.
            logger.debug("SIGHUP cannot be watched in this thread; files only")
            listening = False
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._watch_files())
                if listening:
                    tasks.create_task(self._watch_hangup(hangup))
        finally:
            if listening:
                loop.remove_signal_handler(signal.SIGHUP)

    async def _watch_files(self) -> None:
        if not self._folder.is_dir():
            logger.info("settings folder %s does not exist: reload on SIGHUP only", self._folder)
            return
        async for _ in watchfiles.awatch(
            self._folder,
            watch_filter=self._is_settings_file,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            recursive=False,
        ):
            await self.reload("file change")

    async def _watch_hangup(self, hangup: asyncio.Event) -> None:
        while True:
            await hangup.wait()
            hangup.clear()
            await self.reload("SIGHUP")

    @staticmethod
    def _is_settings_file(change: watchfiles.Change, path: str) -> bool:
        name = Path(path).name
        return any(
            name.startswith(stem + ".") and name.count(".") == stem.count(".") + 1
            for stem in FILE_LAYERS
        )

    def _empty_files(self) -> list[Path]:
        """The settings files of zero bytes."""
        names = {stem + suffix for stem in FILE_LAYERS for suffix in FILE_SUFFIXES}
        try:
            paths = sorted(p for p in self._folder.iterdir() if p.name in names)
            return [p for p in paths if p.is_file() and p.stat().st_size == 0]
        except OSError:
            return []  # the folder or a file went away: the load reports what it finds

    async def reload(self, reason: str) -> str:
        """Load, validate, compare, apply; returns the result counted (applied/rejected/...)."""
        try:
            new = await self._load()
        except SettingsError as error:
            lines = "; ".join(str(p) for p in error.problems)
            logger.error("settings reload (%s) rejected, old settings stay: %s", reason, lines)
            return self._count("rejected")
        changed = changes(self._live.current, new)
        if not changed:
            logger.debug("settings reload (%s): nothing changed", reason)
            return self._count("unchanged")
        live = {k: v for k, v in changed.items() if is_live(k)}
        later = {k: v for k, v in changed.items() if not is_live(k)}
        news = {k: v for k, v in later.items() if self._warned.get(k, ...) != v[1]}
        if news:
            # Once per pending value: a later reload does not repeat the same warning.
            self._warned.update({k: v[1] for k, v in news.items()})
            logger.warning(
                "settings changed that need a restart (not applied): %s", describe_changes(news)
            )
        if not live:
            return self._count("unchanged")
        in_force = with_live_keys(self._live.current, new)
        self._apply(in_force)
        self._live.current = in_force
        self._live.loaded_at = datetime.now(UTC)
        self._live.digest = digest(in_force)
        logger.info("settings reloaded (%s): %s", reason, describe_changes(live))
        return self._count("applied")

    async def _load(self) -> Settings:
        try:
            return self._load_now()
        except SettingsError as error:
            if not any("cannot be parsed" in p.rule for p in error.problems):
                raise
        # Possibly a file caught half written: once more, after a pause.
        await asyncio.sleep(REPARSE_DELAY_S)
        return self._load_now()

    def _load_now(self) -> Settings:
        # An emptied file parses (as nothing) but is more likely half written than meant.
        empty = self._empty_files()
        emptied = [p for p in empty if p.name not in self._meant_empty]
        if emptied:
            raise SettingsError(
                [Problem(p.name, "cannot be parsed: the file is empty", str(p)) for p in emptied]
            )
        started = time.perf_counter()
        loaded = load_settings(self._environ, env=self._env, config_dir=self._folder)
        logger.debug("settings read in %.1f ms", (time.perf_counter() - started) * 1000)
        self._meant_empty &= {p.name for p in empty}
        return loaded.settings

    def _count(self, result: str) -> str:
        self._reloads.add(1, {"result": result})
        return result
