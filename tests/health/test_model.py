"""The health model's pure rules: aggregation order, HTTP codes, safe messages."""

from __future__ import annotations

import pytest

from aiva.health.model import CheckResult, Status, aggregate, http_status
from aiva.health.runner import describe

H, D, U, K = Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY, Status.UNKNOWN


def result(status: Status, critical: bool = False) -> CheckResult:
    return CheckResult("c", status, critical, "", 0.0, None)


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], H),
        ([result(H), result(H, True)], H),
        ([result(U, True), result(D), result(K)], U),
        ([result(U), result(H, True)], D),
        ([result(D), result(K)], D),
        ([result(K), result(H)], K),
        ([result(K, True)], K),
    ],
)
def test_aggregate_follows_the_contract_order(results: list[CheckResult], expected: Status) -> None:
    assert aggregate(results) is expected


def test_http_status() -> None:
    assert [http_status(s) for s in (H, D, U, K)] == [200, 200, 503, 503]


def test_describe_is_one_line_and_masks_passwords() -> None:
    assert describe(ConnectionRefusedError(111, "refused")) == "connection refused"
    error = RuntimeError("cannot reach postgres://app:s3cret@db:5432/x\nsecond line")
    assert describe(error) == "cannot reach postgres://app:****@db:5432/x"
    assert describe(ValueError()) == "ValueError"
    wrapped = RuntimeError("Error 111 connecting to host:6379.")
    assert describe(wrapped) == "connection refused"
