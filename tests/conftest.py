"""Shared fixtures: factories starting real components on free loopback ports, stopped by PID."""

from __future__ import annotations

import pwd
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:  # `infra` must import under any --import-mode
    sys.path.insert(0, _TESTS_DIR)

from infra import postgres as pg_infra  # noqa: E402
from infra import prometheus as prom_infra  # noqa: E402
from infra import redis as redis_infra  # noqa: E402
from infra import rotel as rotel_infra  # noqa: E402
from infra.postgres import Postgres  # noqa: E402
from infra.prometheus import Prometheus, TargetSpec  # noqa: E402
from infra.proxy import Mode, TcpProxy  # noqa: E402
from infra.redis import RedisServer  # noqa: E402
from infra.require import missing, require_binary  # noqa: E402
from infra.rotel import Rotel  # noqa: E402
from infra.service import SUITE_FAST_PATH, AivaService  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fast_layer(*hooks): checks what only these hooks of the fast layer (aiva.fast) "
        "give; left out of a SUITE_FAST_PATH=off run, where the plain pipeline does "
        "without them (the README's fast layer section says what it gives up)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """SUITE_FAST_PATH=off: the tests of what only the fast layer gives are deselected
    (reported as such), not skipped; every other test runs on the plain pipeline."""
    import os

    from aiva.fast import HOOK_NAMES

    for item in items:
        for marker in item.iter_markers("fast_layer"):
            unknown = set(marker.args) - set(HOOK_NAMES)
            if unknown or not marker.args:
                raise pytest.UsageError(f"{item.nodeid}: fast_layer{marker.args}: no such hook")
    if os.environ.get(SUITE_FAST_PATH) != "off":
        return
    plain = [item for item in items if item.get_closest_marker("fast_layer") is None]
    if len(plain) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in plain])
        items[:] = plain


@pytest.fixture(autouse=True, scope="session")
def _suite_fast_path() -> Iterator[None]:
    """SUITE_FAST_PATH=off runs the whole suite on the plain pipeline: services get
    telemetry.fast_path: off (infra.service), and in-process pipelines find no hook."""
    import os

    import aiva.fast

    if os.environ.get(SUITE_FAST_PATH) != "off":
        yield
        return
    saved = aiva.fast.HOOKS
    aiva.fast.HOOKS = ()
    aiva.fast.probe.cache_clear()
    assert aiva.fast.probe() == aiva.fast.PLAIN
    yield
    aiva.fast.HOOKS = saved
    aiva.fast.probe.cache_clear()


class _Stoppable(Protocol):
    """Anything with stop()."""

    def stop(self) -> object:
        """Stop it."""


def _user_exists(name: str) -> bool:
    """True when the OS user exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def _cleanup() -> Iterator[Callable[[Callable[[], object]], None]]:
    """Register finalizers; run in reverse order at teardown, all of them even if one raises."""
    finalizers: list[Callable[[], object]] = []
    yield finalizers.append
    errors: list[BaseException] = []
    for finalize in reversed(finalizers):
        try:
            finalize()
        except Exception as exc:  # noqa: BLE001 - keep stopping the others, report after
            errors.append(exc)
    if errors:
        raise errors[0]


def _started(
    item: _Stoppable,
    start: Callable[[], object],
    cleanup: Callable[[Callable[[], object]], None],
    finalizer: Callable[[], object] | None = None,
) -> None:
    """Register the finalizer first (so a failed start is still stopped), then start."""
    cleanup(finalizer or item.stop)
    start()


@pytest.fixture
def rotel(
    tmp_path_factory: pytest.TempPathFactory, _cleanup: Callable[[Callable[[], object]], None]
) -> Callable[[], Rotel]:
    """Factory: rotel() -> started Rotel (grpc_endpoint, http_endpoint, spans(), restart()...)."""
    binary = require_binary(rotel_infra.rotel_binary(), rotel_infra.INSTALL_HINT)

    def make() -> Rotel:
        collector = Rotel(binary, tmp_path_factory.mktemp("rotel"))
        _started(collector, collector.start, _cleanup)
        return collector

    return make


@pytest.fixture
def postgres(_cleanup: Callable[[Callable[[], object]], None]) -> Callable[[], Postgres]:
    """Factory: postgres() -> started throw-away cluster (dsn, port, stop(), start(), kill())."""
    require_binary(str(pg_infra.PG_BIN / "postgres"), pg_infra.INSTALL_HINT)
    require_binary(str(pg_infra.PG_BIN / "initdb"), pg_infra.INSTALL_HINT)
    os_user = pg_infra.server_os_user()
    if os_user is not None and not _user_exists(os_user):
        missing(
            f"OS user {os_user} not found (PostgreSQL refuses root): useradd --system {os_user}"
        )

    def make() -> Postgres:
        cluster = Postgres()
        _started(cluster, cluster.start, _cleanup, cluster.cleanup)
        return cluster

    return make


@pytest.fixture
def redis_server(
    tmp_path_factory: pytest.TempPathFactory, _cleanup: Callable[[Callable[[], object]], None]
) -> Callable[[], RedisServer]:
    """Factory: redis_server() -> started private redis (url, port, stop(), start(), kill())."""
    binary = require_binary("redis-server", redis_infra.INSTALL_HINT)

    def make() -> RedisServer:
        server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
        _started(server, server.start, _cleanup)
        return server

    return make


@pytest.fixture
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, _cleanup: Callable[[Callable[[], object]], None]
) -> Callable[..., Prometheus]:
    """Factory: prometheus(targets=(), scrape_self=False, exemplars=False, rule_files=()).

    Returns a started Prometheus (url, address, query(), wait_for_query()).
    """
    binary = require_binary("prometheus", prom_infra.INSTALL_HINT)

    def make(
        targets: Sequence[TargetSpec] = (),
        scrape_self: bool = False,
        exemplars: bool = False,
        rule_files: Sequence[Path] = (),
    ) -> Prometheus:
        server = Prometheus(
            binary,
            tmp_path_factory.mktemp("prometheus"),
            targets,
            scrape_self,
            exemplars,
            rule_files,
        )
        _started(server, server.start, _cleanup)
        return server

    return make


@pytest.fixture
def tcp_proxy(_cleanup: Callable[[Callable[[], object]], None]) -> Callable[..., TcpProxy]:
    """Factory: tcp_proxy(target_host, target_port, mode='pass') -> started TcpProxy."""

    def make(target_host: str, target_port: int, mode: Mode = "pass") -> TcpProxy:
        proxy = TcpProxy(target_host, target_port)
        _started(proxy, lambda: proxy.start(mode), _cleanup)
        return proxy

    return make


@pytest.fixture
def aiva_service(
    tmp_path_factory: pytest.TempPathFactory, _cleanup: Callable[[Callable[[], object]], None]
) -> Callable[..., AivaService]:
    """Factory: aiva_service(env=None, args=(), config_files=None, start=True, port=None,
    ready_path="/").

    config_files ({filename: text}) are written into a fresh dir passed as AIVA_CONFIG_DIR.
    With start=False the service is built (and stopped at teardown) but not started.
    """

    def make(
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        config_files: Mapping[str, str] | None = None,
        start: bool = True,
        port: int | None = None,
        ready_path: str = "/",
    ) -> AivaService:
        workdir = tmp_path_factory.mktemp("aiva")
        config_dir = workdir / "config"
        config_dir.mkdir()
        for name, text in (config_files or {}).items():
            (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (config_dir / name).write_text(text, encoding="utf-8")
        service = AivaService(
            workdir, config_dir, env=env, extra_args=args, port=port, ready_path=ready_path
        )
        _started(service, service.start if start else (lambda: None), _cleanup)
        return service

    return make


WriteConfig = Callable[[Mapping[str, str]], Path]


@pytest.fixture
def write_config(tmp_path_factory: pytest.TempPathFactory) -> WriteConfig:
    """Factory: write {filename: text} into a fresh settings folder and return the folder."""

    def write(files: Mapping[str, str]) -> Path:
        folder = tmp_path_factory.mktemp("config")
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return folder

    return write
