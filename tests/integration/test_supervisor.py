"""`notifier deliver --processes N`: N workers, a killed one restarted, nothing lost."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import msgspec
import pytest
from redis.asyncio import Redis

from notifier import config
from tests.helpers import (
    EndpointFactory,
    Spawn,
    eventually,
    idle,
    last_first_arrival,
    register,
    running,
)

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


async def test_a_killed_worker_is_restarted_and_nothing_is_lost(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory, spawn: Spawn
) -> None:
    env["NOTIFIER_CLAIM_IDLE"] = "3s"  # the killed worker's messages come back after this
    settings = config.load(env)
    endpoints = [await endpoint_factory() for _ in range(4)]
    for i, endpoint in enumerate(endpoints):
        await register(redis, settings, f"p{i}", endpoint.url, [f"evt.{i}"])
    supervisor = spawn("deliver", "--processes", "2")
    await eventually(lambda: len(children(supervisor.pid)) == 2, 20, "two workers")
    first = children(supervisor.pid)

    async with running(settings, deliver=False):
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(300):
                for i in range(4):
                    pipe.xadd(
                        "notifier:events",
                        {"type": f"evt.{i}", "data": msgspec.json.encode({"n": n})},
                    )
            await pipe.execute()
        await eventually(
            lambda: sum(len(e.received) for e in endpoints) > 100, 20, "deliveries to start"
        )
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await eventually(
            lambda: len(children(supervisor.pid) - first) == 1,
            20,
            "the killed worker to be replaced",
        )
        for endpoint in endpoints:
            await endpoint.wait_for(300, timeout=30)
        await idle(redis, 20)
    for endpoint in endpoints:
        assert {body["data"]["n"] for body in endpoint.bodies()} == set(range(300))
    # the killed worker's messages come back after NOTIFIER_CLAIM_IDLE (3 s), and go at once
    recovered = last_first_arrival(endpoints) - killed_at
    print(f"all delivered {recovered:.1f}s after the kill")
    assert recovered < 3 + 20  # its claim idle, and the rest of the work on a busy machine

    workers = children(supervisor.pid)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    await eventually(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        10,
        "the workers to stop with their supervisor",
    )
