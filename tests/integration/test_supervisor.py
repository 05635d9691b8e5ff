"""`notifier deliver --processes N`: N workers, a killed one restarted, nothing lost."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import msgspec
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config
from notifier.store import Store
from tests.helpers import (
    EndpointFactory,
    Spawn,
    eventually,
    held_by,
    idle,
    pending_by_consumer,
    register,
    running,
    taken_again,
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
    # What the killed worker held comes back after NOTIFIER_CLAIM_IDLE: short here, as that
    # expiry is what this test is about. Its workers share it, so a message one that lives on
    # strands would pass as soon: the attempt logs tell them apart (below).
    claim_idle = 3.0
    env["NOTIFIER_CLAIM_IDLE"] = f"{claim_idle:g}s"
    settings = config.load(env)

    async def slow_ok(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.05)  # keeps sends in flight long enough to kill a worker among them
        return web.Response()

    endpoints = [await endpoint_factory(slow_ok) for _ in range(4)]
    partner_ids = [
        (await register(redis, settings, f"p{i}", endpoint.url, [f"evt.{i}"]))[0]
        for i, endpoint in enumerate(endpoints)
    ]
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
        consumers = {worker: f"{socket.gethostname()}-{worker}" for worker in first}  # default

        async def holding() -> bool:
            held = await pending_by_consumer(redis, partner_ids)
            started = sum(len(e.received) for e in endpoints) > 100
            return started and any(held[name] for name in consumers.values())

        await eventually(holding, 20, "deliveries to start")
        counts = await pending_by_consumer(redis, partner_ids)
        victim = max(first, key=lambda worker: counts[consumers[worker]])
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        consumer = consumers[victim]
        held = await held_by(redis, partner_ids, consumer)

        async def taken_back() -> bool:
            return not (await pending_by_consumer(redis, partner_ids))[consumer]

        # taken by the others after the claim idle, however long the rest then takes
        await eventually(taken_back, 20, "the killed worker's messages to be taken back")
        recovered = time.monotonic() - killed_at
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
    print(f"the killed worker's {len(held)} messages taken back {recovered:.1f}s after the kill")
    assert recovered < claim_idle + 7  # then the others' next look, on a busy machine
    # only what the killed worker held was taken again: nothing a living worker stranded
    stray = await taken_again(Store(redis, settings), partner_ids) - held
    assert not stray, f"taken again though no dead worker held them: {sorted(stray)}"

    workers = children(supervisor.pid)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    await eventually(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
        10,
        "the workers to stop with their supervisor",
    )
