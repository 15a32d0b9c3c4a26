"""Masking of secrets: whole secret keys, the password part of URLs and DSNs, and the
shared patterns of secrets in free text."""

from __future__ import annotations

import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aiva.settings.masking import (
    Scrubber,
    _built_in_pattern,
    _mask_after_kept,
    is_secret_key,
    is_secret_name,
    mask_text,
    mask_url,
    mask_value,
)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://u:pw@h:5432/db", "postgres://u:****@h:5432/db"),
        ("redis://:pw@localhost:6379/0", "redis://:****@localhost:6379/0"),
        ("http://u:p@ss@h/x", "http://u:****@h/x"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("https://h/path?next=a:b@c", "https://h/path?next=a:b@c"),
        ("no secret here", "no secret here"),
    ],
)
def test_proper_urls(text: str, masked: str) -> None:
    assert mask_url(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres//u:pw@h/db", "postgres//u:****@h/db"),
        ("u:pw@h", "u:****@h"),
        ("redis:pw@h:6379", "redis:****@h:6379"),
        ("postgres//u:p@ss@h/db", "postgres//u:****@h/db"),
        ("see a:b@c and d:e@f", "see a:****@c and d:****@f"),
        ("http://[u:pw@h", "http:****@h"),  # urlsplit refuses it: masked all the same
    ],
)
def test_malformed_dsns_still_mask_the_password(text: str, masked: str) -> None:
    assert mask_url(text) == masked


def test_mask_value_walks_tables_and_masks_secret_keys() -> None:
    assert mask_value("telemetry.otlp.headers", {"authorization": "x"}) == {"authorization": "****"}
    assert mask_value("database.password", "pw") == "****"
    assert mask_value("health.checks", {"db": {"dsn": "pg//u:pw@h"}}) == {
        "db": {"dsn": "pg//u:****@h"}
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "connect to postgresql://app:s3cr@t@db:5432/x failed",
            "connect to postgresql://app:****@db:5432/x failed",
        ),
        ("host=db user=app password='a b' dbname=x", "host=db user=app password='****' dbname=x"),
        ("PWD=hunter2 next", "PWD=**** next"),
        ("no secret here: user@example.com", "no secret here: user@example.com"),
    ],
)
def test_free_text_has_its_passwords_masked(text: str, expected: str) -> None:
    assert mask_text(text) == expected


# --- the shared patterns (settings, health messages and log records) -------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"password": "x y", "user": "u"}', '{"password": "****", "user": "u"}'),
        ("{'db_password': 'x', 'n': 1}", "{'db_password': '****', 'n': 1}"),
        ('{\\"password\\": \\"x\\"}', '{\\"password\\": \\"****"}'),  # JSON quoted again
        ("Authorization: Bearer abc.def more\nnext", "Authorization: ****\nnext"),
        ("Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Authorization: ****"),
        ("Set-Cookie: sid=abc; Path=/; HttpOnly", "Set-Cookie: ****"),
        (
            "[(b'authorization', b'Basic dXNlcjpwdw=='), (b'accept', b'*/*')]",
            "[(b'authorization', b'****'), (b'accept', b'*/*')]",
        ),
        (
            "headers: {'Cookie': 'a=1; b=2', 'X-API-Key': 'k123'}",
            "headers: {'Cookie': '****', 'X-API-Key': '****'}",
        ),
        ("x-api-key=abc&token=def&n=1", "x-api-key=****&token=****&n=1"),
        (
            "client_secret=abc next ACCESS_TOKEN: 'zz'",
            "client_secret=**** next ACCESS_TOKEN: '****'",
        ),
        ("apikey = k1 secret_key:k2", "apikey = **** secret_key:****"),
        ("sent Bearer abcdefghijkl ok", "sent Bearer **** ok"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln ok", "jwt **** ok"),
        ("http://u:p@h?email=a@b.c", "http://u:****@h?email=a@b.c"),
        ("İstanbul password=x", "İstanbul password=****"),  # lower() longer than the text
        # Not secrets: other names, a name without a value, a URL without a password.
        ("tokens: 5, token_count=3, session_id=s1", "tokens: 5, token_count=3, session_id=s1"),
        ("password:\nnext line", "password:\nnext line"),
        ("https://h/path?next=a:b@c", "https://h/path?next=a:b@c"),
        ("GET /items/{item_id} 200", "GET /items/{item_id} 200"),
    ],
)
def test_the_built_in_patterns(text: str, expected: str) -> None:
    assert mask_text(text) == expected


def test_text_none_of_the_patterns_can_match_is_returned_as_it_is() -> None:
    text = "GET /api/demo/items/{item_id} 200 in 1.2 ms"
    assert mask_text(text) is text


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("db_password", True),
        ("X-API-Key", True),
        ("apikey", True),
        ("Authorization", True),
        ("set-cookie", True),
        ("client_secret", True),
        ("refresh_token", True),
        ("session_id", False),
        ("api_key_header", False),
        ("token_count", False),
        ("client_key", False),  # a file path (OTLP mTLS), not a secret
        ("author", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_settings_keys_named_like_a_secret_are_masked_whole() -> None:
    assert is_secret_key("app.stripe.client_secret")
    assert is_secret_key("health.checks.web.token")
    assert not is_secret_key("security.api_key_header")
    assert mask_value("app.db_password", "pw") == "****"


def test_settings_values_have_the_shared_patterns_masked() -> None:
    url = "https://api.example/status?api_key=k1&region=eu"
    assert mask_value("health.checks.web.url", url) == (
        "https://api.example/status?api_key=****&region=eu"
    )
    assert mask_value("security.api_key_header", "X-API-Key") == "X-API-Key"
    assert mask_value("telemetry.otlp.endpoint", "http://collector:4317") == (
        "http://collector:4317"
    )


def test_extra_patterns_mask_their_whole_match() -> None:
    scrubber = Scrubber([r"(?<=card )[0-9]{4}(?:-[0-9]{4}){3}", "x*"])  # x* matches ""
    assert scrubber.scrub("card 4111-1111-1111-1111, password=pw ok") == (
        "card ****, password=**** ok"
    )


# Secrets as hypothesis draws them: no spaces or line breaks (a bare value ends at
# one), no quotes or `&` (which end a quoted or bare value), no `*` (the mask's).
_SECRET = st.text(
    st.characters(
        blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="\"'&*\x85"
    ),
    min_size=8,
    max_size=40,
)
_NAMES = st.sampled_from(
    ["password", "PASSWORD", "db_passwd", "pwd", "secret", "client-secret", "token",
     "access_token", "api_key", "X-Api-Key", "apikey", "private_key", "credentials",
     "authorization", "Cookie", "signature"]
)  # fmt: skip
_AROUND = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="*"))


@settings(deadline=None)
@given(
    name=_NAMES,
    separator=st.sampled_from(["=", ": ", " = ", ":"]),
    quote=st.sampled_from(["", '"', "'"]),
    secret=_SECRET,
    before=_AROUND,
    after=_AROUND,
)
def test_a_value_after_a_secrets_name_never_survives(
    name: str, separator: str, quote: str, secret: str, before: str, after: str
) -> None:
    assume(secret not in before and secret not in after)
    if quote:
        text = f"{before} {quote}{name}{quote}{separator}{quote}{secret}{quote} {after}"
    else:
        text = f"{before} {name}{separator}{secret}\n{after}"
    assert secret not in mask_text(text)


@settings(deadline=None)
@given(
    scheme=st.sampled_from(["postgresql", "redis", "https", "amqp+ssl"]),
    user=st.text(st.sampled_from("abc_.-9"), max_size=8),
    # A password may hold `@` and `:`; not `/`, `?` or `#`, which end the authority.
    secret=_SECRET.filter(lambda s: not set(s) & set("/?#")),
    rest=st.sampled_from(["db:5432/x", "h", "[::1]:6379/0 and more"]),
    before=_AROUND,
)
def test_a_urls_password_never_survives(
    scheme: str, user: str, secret: str, rest: str, before: str
) -> None:
    assume(secret not in before + user + rest)
    assert secret not in mask_text(f"{before} {scheme}://{user}:{secret}@{rest}")


_FRAGMENTS = st.sampled_from(
    ["password", "Token", "api-key", "authorization", "cookie", "secret", "pwd", "=", ":",
     ": ", ",", "'", '"', "\\", "b'", "://", "@", "/", "?", "&", " ", "\n", "eyJ", "abc",
     "x.y", "Bearer ", "12345678", "İ", "passphrase", "credential"]
)  # fmt: skip


@settings(deadline=None)
@given(st.lists(_FRAGMENTS, max_size=30).map("".join))
def test_matching_at_the_anchors_finds_what_a_full_scan_finds(text: str) -> None:
    # The scrubber tries the one regex only where a match can start: it must mask
    # exactly what re.sub over the whole text masks.
    full = _built_in_pattern().sub(_mask_after_kept, text)
    assert Scrubber().scrub(text) == full


@pytest.mark.parametrize("unit", ["eyJ", "://a:", "password=", "bearer ", "token:", '"password":"'])
def test_scrubbing_repeated_anchors_stays_linear(unit: str) -> None:
    """A client controls text that gets logged: 90 KB of one anchor repeated took 5 s
    when each try scanned to the end (quadratic); linear, it takes about 20 ms. The bound
    is fifty times that, so only the quadratic kind fails it."""
    text = unit * (90_000 // len(unit))
    started = time.process_time()
    Scrubber().scrub(text)
    assert time.process_time() - started < 1.0
