"""No wait in the integration tests outlasts half the suite's NOTIFIER_CLAIM_IDLE, so a lease or
message stranded until its expiry fails a test instead of passing late. Checked on the waits
written with a number (`eventually`, an endpoint's `wait_for`, `idle`); a named bound is
checked beside its definition. test_memory runs with a claim idle longer than it may run."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from notifier import config
from notifier.testing import Endpoint, eventually
from tests.helpers import BASE_ENV, idle

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
WAITS = {"eventually", "wait_for", "idle"}
#: Files whose notifier runs with a claim idle of its own, longer than the test may run.
OWN_CLAIM_IDLE = {"test_memory.py"}


def longest_wait() -> float:
    return config.load(BASE_ENV).claim_idle / 2


def literal_timeouts(path: Path) -> list[tuple[int, float]]:
    """(line, seconds) of each wait in `path` whose timeout is written as a number."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in WAITS:
            continue
        if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "asyncio":
            continue  # asyncio.wait_for bounds a call, it waits for nothing to happen
        given = [kw.value for kw in node.keywords if kw.arg == "timeout"] or node.args[1:2]
        for value in given:
            if isinstance(value, ast.Constant) and isinstance(value.value, int | float):
                found.append((node.lineno, float(value.value)))
    return found


def test_the_default_waits_are_under_half_the_claim_idle() -> None:
    for wait in (eventually, Endpoint.wait_for, idle):
        default = inspect.signature(wait).parameters["timeout"].default
        assert default <= longest_wait(), f"{wait.__qualname__} waits {default} s by default"


def test_no_wait_outlasts_half_the_claim_idle() -> None:
    too_long = [
        f"{path.name}:{line}: {seconds:g} s"
        for path in sorted(INTEGRATION.glob("test_*.py"))
        if path.name not in OWN_CLAIM_IDLE
        for line, seconds in literal_timeouts(path)
        if seconds > longest_wait()
    ]
    assert not too_long, f"waits longer than {longest_wait():g} s: {too_long}"


def test_the_check_sees_a_long_wait(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "async def test_x(endpoint, redis):\n"
        "    await endpoint.wait_for(3, timeout=45)\n"
        "    await eventually(lambda: True, 31, 'x')\n"
        "    await idle(redis, 20)\n"
        "    await asyncio.wait_for(endpoint.stop(), 60)\n"
    )
    assert literal_timeouts(sample) == [(2, 45.0), (3, 31.0), (4, 20.0)]
