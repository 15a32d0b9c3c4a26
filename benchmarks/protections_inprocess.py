"""Issue #12's protections measured in-process, and their total against the 3 µs target.

Under wrk the protections' differences drown: in a quiet run (load 1.0-1.3) the pair that
runs the same code both ways differed by 11.5 µs a request (median size over 9 rounds),
four times the target, so `benchmarks/overhead --protections` also runs the in-process
scripts, which time each part alone on core 0 (resolution about 0.1 µs), and adds them:

- the head limits: aiva's httptools protocol against uvicorn's (http_protocol_inprocess);
- the rate limiter, on and allowing: its middleware alone, with and without the RateLimit
  fields it adds near exhaustion (rate_limit_inprocess);
- the attribute value limit: the server span and the access line (attribute_limit_inprocess);
- the log queue: the whole process's CPU per console line, queued against written on the
  logging thread (log_queue_inprocess; negative: the queue's thread writes more cheaply
  than the loop did, and the loop is spared the write).

In the total a part measured below zero counts as zero (noise), except the log queue's
saving, which is real; the total without that saving is printed beside it, and so is
the figure near exhaustion, when the rate limiter adds its RateLimit fields. The head
limits' figure is the difference of the fastest rounds (the script prints both that and
the median; on a shared machine the fastest round is the better estimate).

Load shedding is not in the sum: its in-flight count and comparison run whatever the
limit (a null limit is sys.maxsize), so no pair can isolate it; it is two integer
operations and an attribute read (about 0.1 µs).

Run alone: `python benchmarks/protections_inprocess.py`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_US = 3.0
_NUMBER = r"([+-]?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class Part:
    """One protection's figure, read from one script's output."""

    label: str
    script: str
    pattern: str  # a regular expression whose groups give the figure (see `figure`)


PARTS = (
    Part(
        "head limits, kept-alive request",
        "http_protocol_inprocess.py",
        rf"(?ms)^httptools\s.*?fastest round {_NUMBER}\).*^aiva\s.*?fastest round {_NUMBER}\)",
    ),
    Part(
        "rate limiter on, allowed (no fields)",
        "rate_limit_inprocess.py",
        rf"middleware alone, allowed, > half left\s+{_NUMBER} us",
    ),
    Part(
        "attribute value limit, server span",
        "attribute_limit_inprocess.py",
        rf"server span .*: {_NUMBER} us a request",
    ),
    Part(
        "attribute value limit, access line",
        "attribute_limit_inprocess.py",
        rf"access line .*: {_NUMBER} us a request",
    ),
    Part(
        "log queue, process CPU a console line",
        "log_queue_inprocess.py",
        rf"(?ms)^direct\s+{_NUMBER}\s+{_NUMBER}.*^queued\s+{_NUMBER}\s+{_NUMBER}",
    ),
)
LIMITER = PARTS[1].label
QUEUE = PARTS[4].label
# Near exhaustion (less than half the quota left) the limiter also adds its fields.
FIELDS = Part(
    "rate limiter on, allowed (with fields)",
    "rate_limit_inprocess.py",
    rf"middleware alone, allowed, < half left\s+{_NUMBER} us",
)


def figure(part: Part, output: str) -> float:
    """The µs a request `part` adds, from its script's output (ValueError when absent)."""
    match = re.search(part.pattern, output)
    if match is None:
        raise ValueError(f"{part.script}: no line matching {part.pattern!r}")
    numbers = [float(g) for g in match.groups()]
    if len(numbers) == 2:  # fastest rounds: aiva's protocol minus uvicorn's
        return numbers[1] - numbers[0]
    if len(numbers) == 4:  # the log queue's table: process column, queued minus direct
        return numbers[3] - numbers[1]
    return numbers[0]


def run_script(script: str) -> str:
    """One in-process script's output, pinned to core 0 as its docstring says to run it."""
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, str(HERE / script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout + done.stderr


def report() -> bool:
    """Run the scripts, print each part and the totals; True when within the target."""
    outputs = {script: run_script(script) for script in sorted({p.script for p in PARTS})}
    print("in-process (each part alone on core 0; medians or best rounds, as each script says):")
    figures = {part.label: figure(part, outputs[part.script]) for part in PARTS}
    with_fields = figure(FIELDS, outputs[FIELDS.script])
    for label, value in {**figures, FIELDS.label: with_fields}.items():
        print(f"  {label:42s} {value:+6.2f} us")
    # A part measured below zero counts as zero (noise), except the log queue, whose
    # saving is real (its thread writes more cheaply than the loop did) and is one of the
    # parts the target sums ("the limits, the log queue and the rate limiter").
    costs = {label: max(0.0, value) for label, value in figures.items() if label != QUEUE}
    without_queue = sum(costs.values())
    total = without_queue + figures[QUEUE]
    near_exhaustion = total - costs[LIMITER] + max(0.0, with_fields)
    verdict = "PASS" if total <= TARGET_US else "FAIL"
    print(
        f"  total, rate limiter on: {total:+.2f} us a request: {verdict} (limit {TARGET_US} "
        f"us); the other parts alone, without the log queue's saving: {without_queue:+.2f} us"
    )
    print(
        f"  near exhaustion (less than half the quota left: the RateLimit fields added): "
        f"{near_exhaustion:+.2f} us a request"
    )
    return verdict == "PASS"


if __name__ == "__main__":
    sys.exit(0 if report() else 1)
