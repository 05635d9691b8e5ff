"""Scenario 11: the path of scenario 0 on a Redis Cluster like the suite's
(`notifier.testing_cluster`: three primaries with a replica each, made by `redis-cli --cluster
create`), every node with AOF everysec: `notifier router` and one `notifier deliver` with
NOTIFIER_REDIS_CLUSTER=1 (16 shards). Each primary's CPU (INFO cpu) and commands
(commandstats) over the deliveries, the shards it holds, and how many deliveries a second the
cluster serves before its busiest primary's core is full.

The ingress stream is in a slot of its own, on one primary: that one also carries every
producer's XADD and the router's reads and acknowledgements.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from benchmarks import path
from benchmarks.bench import Bench, progress
from benchmarks.figures import Figure, Results, number
from benchmarks.measurement import expected
from benchmarks.meters import commands_between, commandstats, redis_cpu
from benchmarks.sizes import DATA, INGRESS, PUBLISH_BATCH
from notifier import config
from notifier.config import Settings
from notifier.models import PartnerIn
from notifier.store import Store
from notifier.testing_cluster import RedisCluster

SECTIONS = (11,)
FIGURES = [
    Figure("11a", 11, "11a router + 1 deliver on the cluster", "deliveries/s"),
    Figure("11b", 11, "11b Redis CPU per delivery, every primary together", "us"),
    Figure(
        "11c", 11, "11c deliveries/s the cluster serves (its busiest primary full)", "deliveries/s"
    ),
]


async def run(bench: Bench, results: Results) -> None:
    s = bench.sizes
    results.headings[11] = (
        f"Redis Cluster (3 primaries, a replica each, AOF everysec, 16 shards): {s.partners} "
        f"partners each rate-limited ({path.FREE_LIMIT}) x {s.events:,} events with producer "
        "ids, each to one partner"
    )
    await bench.fresh()
    cluster = RedisCluster(bench.tmp / "cluster")
    progress("11 starting a cluster of six nodes")
    cluster.start()
    client: Any = ClusterClient.from_url(cluster.url)
    try:
        await measure(bench, results, cluster, client)
    finally:
        await client.aclose()
        cluster.stop()


async def measure(bench: Bench, results: Results, cluster: RedisCluster, client: Any) -> None:
    s = bench.sizes
    env = {**bench.env(), "REDIS_URL": cluster.url, "NOTIFIER_REDIS_CLUSTER": "1"}
    settings = config.load(env)
    nodes = {node.port: Redis(port=node.port) for node in cluster.primaries}
    for node in cluster.alive:  # what AOF costs, as on every node of a production cluster
        async with Redis(port=node.port) as each:
            await each.config_set("appendfsync", "everysec")
    names, by_port = await register(bench, client, settings)
    procs = {role: bench.notifier(role, env=env) for role in ("router", "deliver")}
    types = [f"evt.{i}" for i in range(len(names))]
    await publish(client, types, range(len(types)))
    await bench.wait_delivered(dict.fromkeys(names, 1), "the warm-up on the cluster")
    before = {port: await _reading(node) for port, node in nodes.items()}
    started = time.time()
    await publish(client, types, range(len(types), len(types) + s.events))
    want = {n: c + 1 for n, c in expected(names, s.events, first=len(types)).items()}
    last = await bench.wait_delivered(want, "the deliveries on the cluster")
    after = {port: await _reading(node) for port, node in nodes.items()}
    for proc in procs.values():
        bench.stop(proc)
    for each in nodes.values():
        await each.aclose()
    ingress = client.get_node_from_key(INGRESS).port
    report(results, s.events, last - started, before, after, by_port, ingress)


async def register(
    bench: Bench, client: Any, settings: Settings
) -> tuple[list[str], dict[int, Counter[str]]]:
    """The partners of scenario 0 (its limits not binding), on the cluster; which primary
    (port) holds each one's shard."""
    s = bench.sizes
    names = [f"p{i}" for i in range(s.partners)]
    urls = await bench.endpoints.make(dict.fromkeys(names, "ok"))
    store = Store(client, settings)
    space = settings.keyspace()
    by_port: dict[int, Counter[str]] = {}
    for i, name in enumerate(names):
        body = {
            "name": name,
            "url": urls[name],
            "events": [f"evt.{i}"],
            "max_in_flight": s.max_in_flight,
            "rate_limit": path.FREE_LIMIT,
        }
        partner, _ = await store.create(msgspec.convert(body, PartnerIn))
        shard = space.shard_of(partner.id)
        node = client.get_node_from_key(shard.ready)
        by_port.setdefault(node.port, Counter())[f"s{shard.number}"] += 1
    return names, by_port


async def publish(client: Any, types: list[str], indices: range) -> None:
    """XADD events with producer ids to the cluster's ingress stream, in pipelines."""
    for start in range(indices.start, indices.stop, PUBLISH_BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(indices.stop, start + PUBLISH_BATCH)):
                data = DATA % (i, time.time())
                pipe.xadd(INGRESS, {"type": types[i % len(types)], "data": data, "id": f"c-{i}"})
            await pipe.execute()


async def _reading(node: Redis) -> tuple[float, dict[str, tuple[int, float]]]:
    return await redis_cpu(node), await commandstats(node)


def report(
    results: Results,
    deliveries: int,
    seconds: float,
    before: dict[int, Any],
    after: dict[int, Any],
    by_port: dict[int, Counter[str]],
    ingress: int,
) -> None:
    cpu = {port: after[port][0] - before[port][0] for port in after}
    calls = {
        port: sum(n for n, _ in commands_between(before[port][1], after[port][1]).values())
        for port in after
    }
    total = sum(cpu.values())
    results.put("11a", deliveries / seconds, "wall clock, on two cores beside six redis-servers")
    parts = []
    for port in sorted(cpu):
        shards = by_port.get(port, Counter())
        parts.append(
            f"primary :{port} {number(cpu[port] / deliveries * 1e6)} us, "
            f"{calls[port] / deliveries:.1f} commands ({len(shards)} shards, "
            f"{sum(shards.values())} partners{', the ingress stream' if port == ingress else ''})"
        )
    results.put(
        "11b",
        total / deliveries * 1e6,
        "per delivery of the whole cluster: " + "; ".join(parts),
    )
    busiest = max(cpu.values())
    results.put(
        "11c",
        deliveries / busiest,
        f"1 s of CPU on the busiest primary / its {number(busiest / deliveries * 1e6)} us a "
        f"delivery; each primary alone: "
        + ", ".join(f":{port} {number(deliveries / c)}/s" for port, c in sorted(cpu.items())),
    )
