"""The Dockerfile: multi-stage, non-root, exec-form entrypoint, and a HEALTHCHECK that works."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable

from infra.ports import free_port
from infra.service import AivaService

from ._repo import DOCKERFILE, REPO


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def test_multi_stage_runtime_copies_only_the_built_environment() -> None:
    stages = [args for keyword, args in instructions() if keyword == "FROM"]
    assert len(stages) >= 2
    copies = [args for keyword, args in final_stage() if keyword == "COPY"]
    assert any(args.startswith("--from=build") for args in copies)
    assert not any(" src" in args for args in copies), "no sources in the runtime image"


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [args for keyword, args in final_stage() if keyword == "USER"]
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_entrypoint_is_exec_form_so_sigterm_reaches_the_server() -> None:
    entry = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["aiva", "serve"]


def test_copied_sources_exist_and_pass_dockerignore() -> None:
    allowed = [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert any(source == a or source.startswith(a + "/") for a in allowed), source


def healthcheck_command() -> str:
    check = [args for keyword, args in final_stage() if keyword == "HEALTHCHECK"][-1]
    command = check.split(" CMD ", 1)[1]
    assert "aiva health --probe live" in command
    return command


def run_healthcheck(port: int) -> int:
    """The HEALTHCHECK's shell command, as Docker runs it, with the image's port variable."""
    env = {**os.environ, "AIVA_SERVER__PORT": str(port)}
    return subprocess.run(
        ["/bin/sh", "-c", healthcheck_command()], env=env, timeout=30, check=False
    ).returncode


def test_healthcheck_passes_while_live_and_fails_when_down(
    aiva_service: Callable[..., AivaService],
) -> None:
    # A failing critical dependency must not fail the liveness-based HEALTHCHECK.
    closed = free_port()
    service = aiva_service(env={"AIVA_REDIS__URL": f"redis://127.0.0.1:{closed}/0"})
    assert run_healthcheck(service.port) == 0
    assert run_healthcheck(closed) == 1
    assert service.terminate(timeout=20.0) == 0
