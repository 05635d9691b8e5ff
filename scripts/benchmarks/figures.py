"""The figures of a run: rows with a unit and maybe a goal (`Figure`), collected in `Results`,
and the arithmetic that turns repeated runs into one figure (medians, ratios of side-by-side
pairs, percentiles)."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Goal:
    """What an issue asks of a figure: `op` is >=, <=, < or ~ (|value| below `bound`)."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return {
            ">=": value >= self.bound,
            "<=": value <= self.bound,
            "<": value < self.bound,
            "~": abs(value) < self.bound,
        }[self.op]

    def __str__(self) -> str:
        if self.op == "~":
            return f"~0 (< {self.bound:g})"
        return f"{self.op} {self.bound:g}"


@dataclass
class Figure:
    """One row of the table. Scenario modules declare theirs up front (FIGURES), so a scenario
    that fails still prints a row for each, saying so."""

    key: str
    section: int
    label: str
    unit: str
    goal: Goal | None = None
    value: float | None = None
    #: ok, TIMEOUT, FAILED or not run
    status: str = "not run"
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.value is None:
            return None
        return self.goal.met(self.value)

    @property
    def shown(self) -> str:
        return number(self.value) if self.value is not None else self.status


def number(value: float) -> str:
    """About three significant figures, thousands separated: 25,310 / 312 / 25.3 / 0.61;
    whole numbers whole."""
    size = abs(value)
    if size >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Results:
    """Every figure of the run, in the order declared, and the sections' headings."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.headings: dict[int, str] = {}

    def declare(self, figures: Iterable[Figure]) -> None:
        self.figures += [dataclasses.replace(f) for f in figures]

    def get(self, key: str) -> Figure:
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    def put(self, key: str, value: float, detail: str = "") -> None:
        figure = self.get(key)
        figure.value, figure.status, figure.detail = value, "ok", detail

    def add_after(self, key: str, figure: Figure) -> None:
        """A row only known once measured (Redis's top commands), after the row `key`."""
        at = self.figures.index(self.get(key)) + 1
        while at < len(self.figures) and self.figures[at].key.startswith(key + "."):
            at += 1
        figure.status = "ok"
        self.figures.insert(at, figure)

    def in_order(self) -> list[Figure]:
        """By section (scenario 1 measures section 3 too), then as declared."""
        return sorted(self.figures, key=lambda f: f.section)

    def value(self, key: str) -> float | None:
        with contextlib.suppress(KeyError):
            return self.get(key).value
        return None

    def unmeasured(self, figures: Iterable[Figure], status: str, reason: str) -> None:
        for spec in figures:
            figure = self.get(spec.key)
            if figure.status == "not run":
                figure.status, figure.detail = status, reason


def spread(values: Sequence[float], what: str = "runs") -> str:
    """`median of 3 runs: 2,910-3,105`, or nothing for one value."""
    if len(values) < 2:
        return ""
    return f"median of {len(values)} {what}: {number(min(values))}-{number(max(values))}"


def put_median(
    results: Results, key: str, values: Sequence[float], *notes: str, what: str = "runs"
) -> None:
    detail = "; ".join(n for n in (spread(values, what), *notes) if n)
    results.put(key, statistics.median(values), detail)


def put_ratio(
    results: Results, key: str, tops: Sequence[float], bottoms: Sequence[float], *notes: str
) -> None:
    """The median of the ratios of runs taken side by side (same round)."""
    ratios = [a / b for a, b in zip(tops, bottoms, strict=True) if b]
    if ratios:
        put_median(results, key, ratios, *notes, what="pairs")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
