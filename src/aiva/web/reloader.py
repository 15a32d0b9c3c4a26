"""The settings reloader: watches the settings files and SIGHUP, applies what can change live."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import signal
import threading
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
from aiva.settings.reload import Plan, describe_problems, digest, plan

logger = logging.getLogger(__name__)

# Editors' bursts of events (temp file, rename, truncate + write) make one reload: the
# watcher yields once no new event came for STEP_MS (so a truncate and a write up to
# that far apart group), and at the latest DEBOUNCE_MS after the first event.
STEP_MS = 250
DEBOUNCE_MS = 600
# A file that does not parse may be half written: read it once more after this pause.
REPARSE_DELAY_S = 0.3
# A reload that has not read, parsed and validated the settings by then is rejected. The
# largest files allowed (aiva.settings.files.MAX_FILE_BYTES) take 5 to 20 s on one core,
# by their shape; the budget leaves room for a busy machine. A thread cannot be stopped: it
# reads on unobserved, its result is dropped, and no other reload starts until it ends.
RELOAD_BUDGET_S = 30.0


@dataclass
class LiveSettings:
    """The settings in force now, and when and what they were loaded from."""

    current: Settings
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    digest: str = ""

    def __post_init__(self) -> None:
        self.digest = self.digest or digest(self.current)


class CollectorHeld:
    """Python's cyclic garbage collector held off (process-wide) while a reload reads.

    A collection holds the GIL for as long as it runs, whichever thread runs it, and a
    read makes many: a 25,000-key file brought full collections of 80 to 136 ms each in
    the reading thread, and the event loop waited for every one (measured with
    gc.callbacks). Almost all of a read's garbage is freed by reference counting (823
    objects in cycles of 25,000 keys): on release the reading thread collects the young
    objects, which are about all there is to collect, and gives the collector back.
    """

    def __init__(self) -> None:
        self._resume = gc.isenabled()  # an application that turned it off keeps it off
        self._lock = threading.Lock()
        self._held = True
        gc.disable()

    def release(self, collect: bool) -> None:
        """Turn the collector back on (once, from either side); first, with `collect`,
        collect the young objects (the reading thread does, the event loop does not)."""
        with self._lock:
            if not self._held:
                return
            self._held = False
        if self._resume:
            if collect:
                started = time.perf_counter()
                found = gc.collect(0)
                took = (time.perf_counter() - started) * 1000
                logger.debug("settings reload: %d objects in cycles freed in %.1f ms", found, took)
            gc.enable()


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
        self._meant_empty = frozenset(p.name for p in self._empty_files())
        self._one_at_a_time = asyncio.Lock()
        self._reading: concurrent.futures.Future[tuple[Plan, frozenset[str]]] | None = None
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
        """Load, validate, compare, apply; returns the result counted (applied/rejected/...).

        The files are read, parsed and compared in a thread, within RELOAD_BUDGET_S: the
        event loop only applies the outcome.
        """
        async with self._one_at_a_time:  # a file change and a SIGHUP at once: in turn
            if self._reading is not None and not self._reading.done():
                return self._reject(
                    reason,
                    f"the reading started by an earlier reload is still going on, past its "
                    f"{RELOAD_BUDGET_S:g} s budget",
                )
            budget = asyncio.timeout(RELOAD_BUDGET_S)
            try:
                async with budget:
                    outcome = await self._load()
            except SettingsError as error:
                return self._reject(reason, describe_problems(error.problems, len(error.problems)))
            except Exception:  # the reload loop's boundary: a bug must not stop the service
                if budget.expired():
                    return self._reject(
                        reason,
                        f"reading the settings took longer than {RELOAD_BUDGET_S:g} s (the "
                        "reading goes on in its thread; what it finds will be dropped)",
                    )
                logger.exception("settings reload (%s) failed, old settings stay", reason)
                return self._count("rejected")
            return self._put_in_force(outcome, reason)

    def _reject(self, reason: str, why: str) -> str:
        logger.error("settings reload (%s) rejected, old settings stay: %s", reason, why)
        return self._count("rejected")

    def _put_in_force(self, outcome: Plan, reason: str) -> str:
        if not outcome.changed:
            logger.debug("settings reload (%s): nothing changed", reason)
            return self._count("unchanged")
        if outcome.pending:
            self._warned.update(outcome.pending)
            logger.warning(
                "settings changed that need a restart (not applied): %s", outcome.pending_text
            )
        if outcome.in_force is None:
            return self._count("unchanged")
        self._apply(outcome.in_force)
        self._live.current = outcome.in_force
        self._live.loaded_at = datetime.now(UTC)
        self._live.digest = outcome.digest
        logger.info("settings reloaded (%s): %s", reason, outcome.applied)
        return self._count("applied")

    async def _load(self) -> Plan:
        try:
            return await self._read_in_thread()
        except SettingsError as error:
            if not any("cannot be parsed" in p.rule for p in error.problems):
                raise
        # Possibly a file caught half written: once more, after a pause.
        await asyncio.sleep(REPARSE_DELAY_S)
        return await self._read_in_thread()

    async def _read_in_thread(self) -> Plan:
        """_read in a daemon thread of its own.

        Not a pool's: a read past its budget cannot be stopped, and would hold a pooled
        worker (anyio's, asyncio's) and the process's exit, which joins those threads.
        """
        current, meant_empty, logged = self._live.current, self._meant_empty, dict(self._warned)
        done: concurrent.futures.Future[tuple[Plan, frozenset[str]]] = concurrent.futures.Future()
        collector = CollectorHeld()

        def work() -> None:
            try:
                if done.set_running_or_notify_cancel():  # else cancelled before it started
                    done.set_result(self._read(current, meant_empty, logged))
            except Exception as error:  # noqa: BLE001 - handed to the awaiting side, reported there
                done.set_exception(error)
            finally:
                collector.release(collect=True)

        self._reading = done
        threading.Thread(target=work, name="aiva-settings-reload", daemon=True).start()
        try:
            outcome, empty = await asyncio.wrap_future(done)
        finally:
            collector.release(collect=False)  # past the budget (or at shutdown) too
        self._meant_empty &= empty
        return outcome

    def _read(
        self, current: Settings, meant_empty: frozenset[str], logged: Mapping[str, object]
    ) -> tuple[Plan, frozenset[str]]:
        """Every layer read, validated and compared with `current` (in the reading thread);
        the plan and the names of the settings files that are empty now."""
        # An emptied file parses (as nothing) but is more likely half written than meant.
        empty = self._empty_files()
        emptied = [p for p in empty if p.name not in meant_empty]
        if emptied:
            raise SettingsError(
                [Problem(p.name, "cannot be parsed: the file is empty", str(p)) for p in emptied]
            )
        started = time.perf_counter()
        loaded = load_settings(self._environ, env=self._env, config_dir=self._folder)
        outcome = plan(current, loaded.settings, logged)
        logger.debug("settings read in %.1f ms", (time.perf_counter() - started) * 1000)
        return outcome, frozenset(p.name for p in empty)

    def _count(self, result: str) -> str:
        self._reloads.add(1, {"result": result})
        return result
