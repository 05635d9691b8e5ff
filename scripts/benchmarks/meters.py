"""Readers of what a run costs: CPU seconds and peak RSS of a process and its children and the
machine's busy time (/proc, Linux), and Redis's own accounts (INFO cpu, commandstats, stats,
memory)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, 0 when it is gone."""
    stat = _stat(pid)
    if len(stat) < 13:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The living children of a process, their children, and so on."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if len(stat) > 1:
                parents.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def peak_rss(pid: int) -> int:
    """The most resident memory a process has had (VmHWM), in bytes; 0 when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (/proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal (guest is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cpu:
    """CPU seconds each watched process (with its children) used over `wall` seconds, and the
    % of a core everything else on the machine used meanwhile."""

    seconds: dict[str, float]
    wall: float
    others: float

    def percent(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / self.wall * 100


class CpuMeter:
    """Watches named processes, each with the children it has when the meter starts (the
    workers of `--processes N`), and this process as `bench`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.trees = {name: [pid, *descendants(pid)] for name, pid in pids.items()}
        self.trees["bench"] = [os.getpid()]
        self.before = self._seconds()
        self.machine = machine_busy_seconds()
        self.started = time.monotonic()

    def _seconds(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in tree) for name, tree in self.trees.items()}

    def read(self) -> Cpu:
        wall = max(time.monotonic() - self.started, 1e-6)
        seconds = {name: now - self.before[name] for name, now in self._seconds().items()}
        machine = machine_busy_seconds() - self.machine
        return Cpu(seconds, wall, max(0.0, machine - sum(seconds.values())) / wall * 100)


def cpu_text(cpu: Cpu, names: Iterable[str]) -> str:
    """`deliver 98%, router 31%, redis 40%, others 3%` (% of one core)."""
    parts = [f"{name} {cpu.percent(name):.0f}%" for name in names]
    return ", ".join([*parts, f"others {cpu.others:.0f}%"])


async def redis_cpu(redis: Any) -> float:
    """redis-server's CPU seconds so far (INFO cpu: user + sys, all its threads)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def commandstats(redis: Any) -> dict[str, tuple[int, float]]:
    """Command name -> (calls, usec) so far; commands run inside scripts count too."""
    info = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in info.items()
    }


def commands_between(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    zero = (0, 0.0)
    return {
        name: (calls - before.get(name, zero)[0], usec - before.get(name, zero)[1])
        for name, (calls, usec) in after.items()
        if calls > before.get(name, zero)[0]
    }


async def total_commands(redis: Any) -> int:
    """Commands Redis has processed so far (INFO stats); each reading is one more."""
    return int((await redis.info("stats"))["total_commands_processed"])


async def used_memory(redis: Any) -> int:
    return int((await redis.info("memory"))["used_memory"])
