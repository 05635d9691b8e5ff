"""`notifier deliver --processes N`: N workers, a killed one restarted, nothing lost."""

from __future__ import annotations

import os

import pytest

from notifier.engine.supervisor import worker_count

pytestmark = pytest.mark.slow


def test_worker_count_reads_n_or_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "x", "257"):
        with pytest.raises(ValueError, match="processes"):
            worker_count(bad)
