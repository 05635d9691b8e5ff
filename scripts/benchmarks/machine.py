"""What was measured, where: the commit of notifier's code and the machine it ran on, for
the head of the bench's table.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from benchmarks.bench import ROOT


def code_version() -> str:
    """The commit measured, and whether notifier's code differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", "notifier", "lua", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return head[:72].rstrip() + (" + uncommitted changes in notifier/lua" if dirty else "")


def machine_line() -> str:
    redis_version = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout
        redis_version = out.split("v=", 1)[1].split()[0]
    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio loop"
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    return (
        f"nproc={os.cpu_count()}{model}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, redis-server {redis_version}, {loop}"
    )
