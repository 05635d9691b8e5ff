"""The path users run, as the headline scenario (0), the latency scenario (2) and the Cluster
scenario (10) set it up: every partner rate-limited (limits far above what it gets, and one
partner whose limit binds), a producer `id` on every event (every REPEAT-th published twice,
which must be delivered once), and Redis with `appendonly yes`, `appendfsync everysec`.

`path_run` is `measurement.throughput_run` on that path: the throughput is timed at the partners
whose limits do not bind, as the bare client's is, while the binding partner works through a
backlog of BINDING_SECONDS of its limit from the same moment; its arrivals say whether the
limit held (never more than it in any window) and was used (its rate over the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.bench import Bench
from benchmarks.measurement import Run, expected
from benchmarks.meters import commands_between, commandstats, peak_rss, redis_cpu
from benchmarks.sizes import DATA, INGRESS, PUBLISH_BATCH

#: Per partner: far above the couple of hundred a second one gets here, so it never binds,
#: but every take still keeps its window.
FREE_LIMIT = "10000/second"
BINDING = "limited"
BINDING_LIMIT = 100  # requests a second
BINDING_SECONDS = 5.0
#: Every REPEAT-th event's id is published again after the burst: delivered once in all.
REPEAT = 100


@dataclass
class PathRun:
    run: Run
    #: The binding partner: requests in the timed part, all of them, the most in any 1 s,
    #: its rate over its backlog (requests/s, edges smoothed over its window).
    binding_during: int
    binding_received: int
    binding_expected: int
    binding_most: int
    binding_rate: float

    @property
    def deliveries(self) -> int:
        """Every delivery of the timed part, the binding partner's included (what Redis's
        work is divided by)."""
        return self.run.deliveries + self.binding_during

    @property
    def used(self) -> float:
        """% of the binding limit the partner received."""
        return self.binding_rate / BINDING_LIMIT * 100


@contextlib.asynccontextmanager
async def persistence(bench: Bench, *clients: Any) -> Any:
    """AOF with `appendfsync everysec` on the bench's Redis (or on `clients`, a Cluster's
    nodes) for the length of the block; the bench's own setting again after it."""
    targets = clients or (bench.redis,)
    for client in targets:
        await client.config_set("appendfsync", "everysec")
        await client.config_set("appendonly", "yes")
    await compact(targets)
    try:
        yield
    finally:
        if not clients and bench.aof == "no":
            await bench.redis.config_set("appendonly", "no")
        elif not clients:
            await bench.redis.config_set("appendfsync", bench.aof)


async def compact(clients: Iterable[Any]) -> None:
    """Rewrite each AOF now, while the data set is small (after a flush), so that no rewrite
    of a grown one starts during a measurement; wait until each is done."""
    for client in clients:
        with contextlib.suppress(Exception):  # one may be under way already
            await client.bgrewriteaof()
    for client in clients:
        for _ in range(600):
            info = await client.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            await asyncio.sleep(0.05)


async def partners(bench: Bench, db: int = 0) -> tuple[list[str], str]:
    """The scenario's partners: p0..p(N-1) as in scenario 1, each with FREE_LIMIT, and the
    binding partner on type `evt.limited`; returns the names and the binding one's id."""
    s = bench.sizes
    names = [f"p{i}" for i in range(s.partners)]
    urls = await bench.endpoints.make(dict.fromkeys([*names, BINDING], "ok"))
    for i, name in enumerate(names):
        await bench.register(
            name,
            urls[name],
            [f"evt.{i}"],
            db,
            max_in_flight=s.max_in_flight,
            rate_limit=FREE_LIMIT,
        )
    limited = await bench.register(
        BINDING,
        urls[BINDING],
        ["evt.limited"],
        db,
        max_in_flight=s.max_in_flight,
        rate_limit=f"{BINDING_LIMIT}/second",
    )
    return names, limited


async def publish(
    bench: Bench, types: Sequence[str], indices: Iterable[int], tag: str = "ev", db: int = 0
) -> None:
    """XADD event i of type types[i % len(types)] with the producer id `<tag>-<i>`, for each
    i of `indices`, in pipelines of PUBLISH_BATCH."""
    redis = bench.client(db)
    batch: list[int] = []

    async def flush() -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for i in batch:
                data = DATA % (i, time.time())
                pipe.xadd(
                    INGRESS, {"type": types[i % len(types)], "data": data, "id": f"{tag}-{i}"}
                )
            await pipe.execute()
        batch.clear()

    for i in indices:
        batch.append(i)
        if len(batch) == PUBLISH_BATCH:
            await flush()
    if batch:
        await flush()


async def path_run(
    bench: Bench, names: list[str], procs: dict[str, Any], events: int, db: int = 0
) -> PathRun:
    """Warm up, then publish the binding partner's backlog and `events` events (event i to
    names[i % len]) with ids, then every REPEAT-th id again; time them at the free partners
    from the first XADD to the last arrival, watching `procs` and Redis meanwhile; then wait
    for the binding partner's backlog and read its arrivals."""
    types = [f"evt.{i}" for i in range(len(names))]
    await publish(bench, [*types, "evt.limited"], range(len(types) + 1), "warm", db)
    await bench.wait_delivered(
        dict.fromkeys([*names, BINDING], 1), f"the warm-up deliveries (are {', '.join(procs)} up?)"
    )
    await bench.settle()
    want = {name: n + 1 for name, n in expected(names, events, first=len(types)).items()}
    backlog = int(BINDING_LIMIT * BINDING_SECONDS)
    meter = bench.meter({name: p.pid for name, p in procs.items()})
    cpu_before = await redis_cpu(bench.redis)
    commands_before = await commandstats(bench.redis)
    started = time.time()
    await publish(bench, ["evt.limited"], range(backlog), "limited", db)
    first = len(types)
    await publish(bench, types, range(first, first + events), db=db)
    await publish(bench, types, range(first, first + events, REPEAT), db=db)
    last = await bench.wait_delivered(want, "the deliveries")
    cpu = meter.read()
    cpu_after = await redis_cpu(bench.redis)
    commands = commands_between(commands_before, await commandstats(bench.redis))
    rss = {name: peak_rss(proc.pid) for name, proc in procs.items()}
    during = (await bench.endpoints.window(BINDING, started, last))["count"]
    ended = await bench.wait_delivered({BINDING: backlog + 1}, "the binding partner's backlog")
    await asyncio.sleep(0.3)
    counts = await bench.endpoints.counts()
    extra = sum(counts[name][0] for name in names) - sum(want.values())
    window = await bench.endpoints.window(BINDING, started, ended)
    received = counts[BINDING][0] - 1
    run = Run(events, last - started, cpu, rss, cpu_after - cpu_before, commands, extra)
    rate = window["rate"] or window["count"] / max(ended - started, 1e-3)
    return PathRun(run, during, received, backlog, window["max_per_span"], rate)
