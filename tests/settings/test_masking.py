"""Masking of secrets: whole secret keys, and the password part of URLs and DSNs."""

from __future__ import annotations

import pytest

from aiva.settings.masking import mask_text, mask_url, mask_value


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
        ("host=db user=app password='a b' dbname=x", "host=db user=app password=**** dbname=x"),
        ("PWD=hunter2 next", "PWD=**** next"),
        ("no secret here: user@example.com", "no secret here: user@example.com"),
    ],
)
def test_free_text_has_its_passwords_masked(text: str, expected: str) -> None:
    assert mask_text(text) == expected
