"""The benchmarks run to the end: `python -m benchmarks --quick` (what `scripts/bench --quick`
runs after setting up) exits 0, prints a row for every figure every scenario declares, and
measured each one (no TIMEOUT or FAILED), as its JSON says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_bench_prints_every_figure(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        from benchmarks.__main__ import SCENARIOS
    finally:
        sys.path.remove(str(SCRIPTS))
    labels = [f.label for module in SCENARIOS for f in module.FIGURES]
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": str(SCRIPTS)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    missing = [label for label in labels if label not in result.stdout]
    assert not missing, f"rows missing from the table: {missing}\n{result.stdout}"
    figures = json.loads(out.read_text())["figures"]
    assert {f["label"] for f in figures} >= set(labels)
    unmeasured = [
        f"{f['label']}: {f['status']} {f['detail']}"
        for f in figures
        if f["status"] != "ok" or f["value"] is None
    ]
    assert not unmeasured, "\n".join(unmeasured)
