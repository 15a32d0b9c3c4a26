"""aiva's route path reads the scope as Starlette's private helper does, so an upgrade
that changes Starlette's reading fails here rather than mislabelling routes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette._utils import get_route_path  # the reference, in this test only

from aiva.web.paths import route_path

CASES = [
    ("/items/1", ""),
    ("/items/1", "/api"),
    ("/api/items/1", "/api"),
    ("/api", "/api"),
    ("/apis/items", "/api"),
    ("/api/", "/api"),
    ("/", ""),
    ("/x", "/"),
]


@pytest.mark.parametrize(("path", "root"), CASES)
def test_same_path_as_starlette(path: str, root: str) -> None:
    scope = {"type": "http", "path": path, "root_path": root}
    assert route_path(scope) == get_route_path(scope)  # type: ignore[arg-type]


def test_without_root_path_key() -> None:
    assert route_path({"path": "/a/b"}) == "/a/b"


@given(st.text(alphabet="/ab", max_size=12), st.text(alphabet="/ab", max_size=6))
def test_same_as_starlette_for_any_path(path: str, root: str) -> None:
    scope = {"type": "http", "path": "/" + path, "root_path": root}
    assert route_path(scope) == get_route_path(scope)  # type: ignore[arg-type]
