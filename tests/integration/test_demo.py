"""The README's first command tells the same short story every time it runs, and Ctrl-C ends it
with a summary, not a traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, str(DEMO), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def story(output: str) -> list[str]:
    """The lines that must be the same in every run: the summary, without run-specific ids."""
    start = output.index("\nsummary")
    summary = output[start:].split("\nlook at:")[0]
    return [re.sub(r"\s+", " ", line).strip() for line in summary.splitlines() if line.strip()]


def test_two_runs_in_a_row_tell_the_same_story() -> None:
    outputs = []
    for _ in range(2):
        proc = demo("--events", "12", "--rate", "20")
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        outputs.append(out)
    first, second = outputs
    assert story(first) == story(second)
    for out in outputs:
        assert "\x1b[" not in out  # not a terminal: no colour codes
        assert "Traceback" not in out
        assert "SIGNATURE FAILED" not in out
        for needed in (
            "registered shipping",
            "registered reviews",
            "registered analytics",
            "at most 5/second",
            "analytics failed; notifier will retry it",
            "gave up after 3 attempts",
            "dead-lettered",
            "POST /v1/dead-letters/replay",
            "reached analytics after the replay",
            "dead letters replayed: 1",
            "/metrics",
            "/healthz",
            "notifier partners list",
        ):
            assert needed in out, needed
    assert "shipping received 12 of 12 expected" in " ".join(story(first))
    assert "analytics received 12 of 12 expected" in " ".join(story(first))


def test_ctrl_c_prints_the_summary_and_no_traceback() -> None:
    proc = demo("--events", "400", "--rate", "10")
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "attempt 1" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = seen + rest
    assert proc.returncode == 130, out
    assert "summary (interrupted)" in out
    assert "Traceback" not in out
