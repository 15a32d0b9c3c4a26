"""Skip (or, when CI=true, fail) a test whose external binary is missing, with an install hint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the CI environment variable is 'true' (missing tools must fail there, not skip)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def find_binary(name_or_path: str) -> str | None:
    """Absolute path of an executable given by name (PATH lookup) or path, else None."""
    if os.sep in name_or_path:
        return (
            name_or_path
            if Path(name_or_path).is_file() and os.access(name_or_path, os.X_OK)
            else None
        )
    return shutil.which(name_or_path)


def missing(reason: str) -> NoReturn:
    """pytest.skip(reason), or pytest.fail(reason) under CI=true."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def require_binary(name_or_path: str, how_to_install: str) -> str:
    """The executable's path; skip (fail under CI=true) with an install hint when missing."""
    found = find_binary(name_or_path)
    if found is None:
        missing(f"{Path(name_or_path).name} not found: {how_to_install}")
    return found
