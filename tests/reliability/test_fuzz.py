"""Property-based fuzzing of what a client and an operator send a running `aiva serve`:
request heads, trace-propagation headers and settings files (hypothesis).

The invariant after every example: the process still answers `/livez` within 1 s. After
each run: its memory stayed within a bound, and a valid request still gets its span at a
real collector (rotel). Every example is bounded in size; every run in count and time.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.rotel import Rotel
from infra.service import AivaService

RUNS = settings(
    max_examples=120,
    deadline=None,  # each example talks to a real process
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same examples every run: a failure can be replayed
    database=None,
)
# RSS the service may gain over a whole run (its caches are bounded: attribute sets,
# parsed hosts, route templates).
RSS_GROWTH_MAX = 64 * 1024 * 1024
ENV = {"AIVA_HEALTH__CHECKS__CPU__ENABLED": "false", "AIVA_TELEMETRY__LOGS__LEVEL": "WARNING"}


def _livez_within_a_second(service: AivaService) -> None:
    started = time.monotonic()
    answer = httpx.get(service.base_url + "/livez", timeout=1.0)
    assert answer.status_code == 200
    assert time.monotonic() - started < 1.0


def _rss(service: AivaService) -> int:
    assert service.pid is not None
    return int(psutil.Process(service.pid).memory_info().rss)


def _a_valid_request_gets_its_span(service: AivaService, collector: Rotel) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with service.client() as client:
        answer = client.get(
            "/api/demo/items/5", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        )
    assert answer.status_code == 200
    collector.wait_for_spans(lambda s: s["trace_id"] == trace_id, timeout=15)


def _send_raw(service: AivaService, data: bytes) -> bytes:
    """Send `data` on a fresh connection, read what comes back (bounded), close."""
    with socket.create_connection((service.host, service.port), timeout=2) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while len(received) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionError):
            return b""  # the server may close, reset or wait: all fine for the invariant
    return received


# --- request heads --------------------------------------------------------------

_TOKEN = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
_ANY_BYTES = st.binary(max_size=300)
_METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "PROPFIND", "OPTIONS", "DELETE"]),
    _TOKEN,
)
_PATHS = st.one_of(
    st.sampled_from(["/", "/api/demo/items/1", "/livez", "/metrics", "/health", "/info"]),
    st.builds(lambda s: "/" + s, st.text(max_size=200)),
    st.builds(lambda n: "/" + "a" * n, st.integers(min_value=0, max_value=20_000)),
)
_HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "host",
            "content-length",
            "transfer-encoding",
            "traceparent",
            "tracestate",
            "baggage",
            "x-request-id",
            "user-agent",
            "forwarded",
            "x-forwarded-for",
            "expect",
            "connection",
        ]
    ),
    _TOKEN,
)
_HEADER_VALUES = st.one_of(
    _TOKEN,
    _ANY_BYTES.map(lambda b: b.decode("latin-1")),
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    st.builds(lambda n: "v" * n, st.integers(min_value=0, max_value=12_000)),
)


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    """An HTTP/1.1 request, mostly well formed but with hostile parts, or plain garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2000))
    method = draw(_METHODS)
    path = draw(_PATHS)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", ""]))
    headers = draw(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=12))
    lines = [f"{method} {path} {version}", "host: fuzz"] + [f"{k}: {v}" for k, v in headers]
    body = draw(st.binary(max_size=500))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def test_request_heads(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    collector = rotel()
    service = aiva_service(env={**ENV, "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint})
    _livez_within_a_second(service)
    rss_before = _rss(service)

    @RUNS
    @given(head=request_heads())
    def check(head: bytes) -> None:
        _send_raw(service, head)
        _livez_within_a_second(service)

    check()
    assert service.running
    assert _rss(service) - rss_before < RSS_GROWTH_MAX
    _a_valid_request_gets_its_span(service, collector)


# --- trace-propagation headers ----------------------------------------------------------

_HEX = st.text(alphabet="0123456789abcdefABCDEF-", max_size=60)
_PROPAGATION = st.fixed_dictionaries(
    {},
    optional={
        "traceparent": st.one_of(
            _HEX,
            st.builds(
                lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
                st.text("0123456789abcdef", min_size=0, max_size=3),
                st.text("0123456789abcdef", min_size=0, max_size=34),
                st.text("0123456789abcdef", min_size=0, max_size=18),
                st.text("0123456789abcdef", min_size=0, max_size=3),
            ),
        ),
        "tracestate": st.one_of(
            _TOKEN,
            st.lists(st.tuples(_TOKEN, _TOKEN), max_size=40).map(
                lambda kv: ",".join(f"{k}={v}" for k, v in kv)
            ),
        ),
        "baggage": st.one_of(
            _TOKEN,
            st.builds(lambda n: "k=" + "v" * n, st.integers(0, 60_000)),
            st.lists(st.tuples(_TOKEN, _TOKEN), max_size=200).map(
                lambda kv: ",".join(f"{k}={v}" for k, v in kv)
            ),
        ),
    },
)


def test_trace_headers(
    rotel: Callable[[], Rotel], aiva_service: Callable[..., AivaService]
) -> None:
    """Any trace context a client sends: the request is answered as usual, with a span."""
    collector = rotel()
    service = aiva_service(env={**ENV, "AIVA_TELEMETRY__OTLP__ENDPOINT": collector.grpc_endpoint})
    rss_before = _rss(service)
    seen = 0

    @RUNS
    @given(headers=_PROPAGATION)
    def check(headers: dict[str, str]) -> None:
        nonlocal seen
        with service.client() as client:
            try:
                answer = client.get("/api/demo/items/3", headers=headers)
            except httpx.LocalProtocolError:
                return  # httpx refuses to send it (not a valid header value)
        assert answer.status_code in (200, 431)
        seen += answer.status_code == 200
        _livez_within_a_second(service)

    check()
    assert _rss(service) - rss_before < RSS_GROWTH_MAX
    # Every answered request made its span (rotel receives them all, none lost).
    collector.wait_for_spans(lambda s: s["name"] == "GET /api/demo/items/{item_id}", count=seen)


# --- settings files --------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=50)
)
_TREES = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=40,
)


@st.composite
def settings_files(draw: st.DrawFn) -> str:
    """A settings.local.yaml: random bytes-as-text, or YAML of random (often wrong) keys
    under an environment section, with anchors and aliases now and then."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=2000))
    if kind == 4:  # "billion laughs": each level nine aliases of the one before
        levels, fan_out = draw(st.integers(2, 8)), draw(st.integers(2, 9))
        lines = ['    l0: &l0 ["lol"]']
        for level in range(1, levels + 1):
            refs = ",".join([f"*l{level - 1}"] * fan_out)
            lines.append(f"    l{level}: &l{level} [{refs}]")
        return "default:\n  app:\n" + "\n".join(lines) + "\n"
    if kind == 1:
        anchors = "a: &x [" + ",".join(["y"] * draw(st.integers(1, 9))) + "]\n"
        aliases = "b: [" + ",".join(["*x"] * draw(st.integers(1, 9))) + "]\n"
        return "default:\n  app:\n    " + anchors + "    " + aliases
    tree = draw(st.dictionaries(st.sampled_from(["server", "telemetry", "health", "app", "x"]),
                                _TREES, max_size=4))  # fmt: skip
    import yaml

    return yaml.safe_dump({"default": tree}, allow_unicode=True)


def test_settings_files(aiva_service: Callable[..., AivaService]) -> None:
    """Any settings file dropped in while the service runs: applied or refused, and the
    service keeps answering."""
    service = aiva_service(env=ENV)
    target = service.config_dir / "settings.local.yaml"
    rss_before = _rss(service)

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
        database=None,
    )
    @given(text=settings_files())
    def check(text: str) -> None:
        target.write_text(text, encoding="utf-8", errors="surrogateescape")
        time.sleep(0.05)
        _livez_within_a_second(service)

    check()
    target.unlink()
    time.sleep(1.5)  # the reload that puts the files' settings back
    _livez_within_a_second(service)
    assert service.running
    assert _rss(service) - rss_before < RSS_GROWTH_MAX


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_a_bare_connection_does_not_block_probes(
    aiva_service: Callable[..., AivaService], size: int
) -> None:
    """Connections that send nothing, a little, or a flood without a line end."""
    service = aiva_service(env=ENV)
    conns = []
    try:
        for _ in range(20):
            conn = socket.create_connection((service.host, service.port), timeout=2)
            if size:
                with contextlib.suppress(OSError):  # the server may close a flood early
                    conn.sendall(b"G" * size)
            conns.append(conn)
        _livez_within_a_second(service)
    finally:
        for conn in conns:
            conn.close()
