"""Log record texts are bounded: cut with a note, secrets near the cut still masked."""

from __future__ import annotations

import logging

from aiva.settings.masking import Scrubber
from aiva.telemetry.log_bounds import MAX_TEXT_CHARS, bounded
from aiva.telemetry.logs import JsonFormatter, OtlpLogHandler, OtlpLogs
from aiva.telemetry.scrub import RecordScrubber
from tests.telemetry.test_logs import _in_memory_pipeline

scrub = Scrubber().scrub


def test_a_text_within_the_limit_is_only_scrubbed() -> None:
    text = "x" * MAX_TEXT_CHARS
    assert bounded(scrub)(text) is text  # the same object: nothing masked, nothing cut
    assert bounded(scrub)("password=hunter2") == scrub("password=hunter2")


def test_a_long_text_is_cut_with_a_note() -> None:
    cut = bounded(scrub, limit=100)("a" * 10_000_000)
    assert cut == "a" * 100 + "… [cut: 10000000 characters, 100 kept]"


def test_a_secret_at_the_cut_is_masked_or_left_out() -> None:
    for start in range(80, 121, 4):  # the secret's pair across the limit of 100
        text = "a" * start + " password=hunter2hunter2 " + "b" * 5000
        assert "hunter2" not in bounded(scrub, limit=100)(text), start
    # Split by the first cut (the limit and 1 KiB of room), after secrets that masking
    # shortened by more than that room: the part left matches no pattern, and is left out.
    pairs = ("password=" + "x" * 300 + " ") * 3
    text = pairs + "postgresql://app:s3cret" + "p" * 2000 + "@db/x"
    assert "app:s3cretppp" in scrub(text[:1124])  # unmasked, split before its "@"
    cut = bounded(scrub, limit=100)(text)
    assert "s3cr" not in cut
    assert cut.startswith("password=**** password=**** password=****")


def test_every_output_shows_the_record_cut() -> None:
    header = "k=" + "v" * 10_000_000
    record = logging.makeLogRecord(
        {
            "msg": "Baggage header `%s` exceeded the maximum number of bytes",
            "args": (header,),
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "client_header": header,  # an extra field too
        }
    )
    scrubber = RecordScrubber()
    line = JsonFormatter(scrubber=scrubber).format(record)
    assert len(line) < 2 * MAX_TEXT_CHARS + 1024
    assert line.count("… [cut: ") == 2
    exporter, provider, processor = _in_memory_pipeline()
    OtlpLogHandler(OtlpLogs(provider, processor), scrubber=scrubber).emit(record)
    assert provider.force_flush(5000)
    [exported] = exporter.get_finished_logs()
    body = exported.log_record.body
    assert isinstance(body, str) and len(body) < MAX_TEXT_CHARS + 100
    provider.shutdown()
