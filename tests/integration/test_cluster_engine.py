"""notifier on a real Redis Cluster (three primaries, a replica each): partners on every
primary get every event once, a rate limit holds across delivery processes, and a primary
SIGKILLed while events stream in fails over with nothing lost that Redis acknowledged more
than a second before the kill. The same public behaviour as on one Redis is checked by the
tests marked `cluster` (test_pipeline, test_operations), which run on both."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from notifier import config
from notifier.config import Settings
from notifier.testing_cluster import RedisCluster
from tests.helpers import EndpointFactory, Spawn, eventually, idle, publish, register, stop_running
from tests.integration.test_ratelimit import busiest_window
from tests.integration.test_sentinel import Producer, Tally

pytestmark = pytest.mark.slow

#: From the SIGKILL to the first delivery of an event published after it: the replica takes
#: over after the node timeout (1 s) and an election; clients then reload the slot map.
RESUME_BOUND = 15.0


@pytest.fixture
def backend() -> str:
    return "cluster"


async def partners_on_every_primary(
    redis: Redis, settings: Settings, url: str, count: int = 3
) -> list[str]:
    """Register partners until each primary holds at least `count` partners' shards."""
    cluster: ClusterClient = redis  # type: ignore[assignment]
    space = settings.keyspace()
    per_node: Counter[str] = Counter()
    ids: list[str] = []
    n = 0
    while len(per_node) < 3 or min(per_node.values()) < count:
        pid, _ = await register(redis, settings, f"p{n}", f"{url}/{n}", ["order.created"])
        node = cluster.get_node_from_key(space.shard_of(pid).ready)
        assert node is not None
        per_node[node.name] += 1
        ids.append(pid)
        n += 1
        assert n < 100, per_node
    return ids


async def test_partners_on_every_primary_get_each_event_once(
    redis: Redis,
    env: dict[str, str],
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
) -> None:
    settings = config.load(env)
    endpoint = await endpoint_factory()
    ids = await partners_on_every_primary(redis, settings, endpoint.url)
    procs = [spawn("router"), spawn("deliver"), spawn("deliver")]
    for n in range(40):
        await publish(redis, "order.created", {"n": n}, event_id=f"ord-{n}")
    for n in range(10):  # the same producer ids again: delivered once all the same
        await publish(redis, "order.created", {"n": n}, event_id=f"ord-{n}")
    await endpoint.wait_for(40 * len(ids), 30)
    await idle(redis, 20)
    by_partner: dict[str, Counter[str]] = {}
    for received in endpoint.received:
        by_partner.setdefault(received.path, Counter())[received.headers["webhook-id"]] += 1
    assert len(by_partner) == len(ids)
    for counts in by_partner.values():
        assert sorted(counts) == sorted(f"ord-{n}" for n in range(40))
        assert set(counts.values()) == {1}
    stop_running(procs)


async def test_a_rate_limit_holds_across_delivery_processes(
    redis: Redis, env: dict[str, str], spawn: Spawn, endpoint_factory: EndpointFactory
) -> None:
    settings = config.load(env)
    endpoint = await endpoint_factory()
    await register(
        redis, settings, "limited", endpoint.url, ["order.created"], rate_limit="10/second"
    )
    procs = [spawn("router"), spawn("deliver"), spawn("deliver")]
    for n in range(40):
        await publish(redis, "order.created", {"n": n})
    await endpoint.wait_for(40, 30)
    stop_running(procs)
    assert busiest_window(endpoint.received) <= 10
    span = endpoint.received[-1].at - endpoint.received[0].at
    assert span >= 2.9  # 40 at 10 a second: the limit was used, not exceeded
    assert sorted(b["data"]["n"] for b in endpoint.bodies()) == list(range(40))


async def test_a_primary_killed_mid_stream_fails_over(
    redis: Redis,
    redis_cluster: RedisCluster,
    env: dict[str, str],
    spawn: Spawn,
    endpoint_factory: EndpointFactory,
) -> None:
    env["NOTIFIER_CLAIM_IDLE"] = "5s"  # a send whose settle the failover lost goes again soon
    settings = config.load(env)
    endpoint = await endpoint_factory()
    await register(redis, settings, "orders", endpoint.url, ["order.created"])
    procs = [spawn("router"), spawn("deliver"), spawn("deliver")]
    producer = Producer(redis)
    producing = asyncio.create_task(producer.run())
    await endpoint.wait_for(100, 30)
    cluster: ClusterClient = redis  # type: ignore[assignment]
    ingress = cluster.get_node_from_key("notifier:events")
    assert ingress is not None
    victim = next(n for n in redis_cluster.primaries if n.port == ingress.port)
    killed = time.monotonic()
    redis_cluster.kill_primary(victim)
    try:
        await redis_cluster.promoted()

        def resumed() -> bool:
            arrived = {r.headers["webhook-id"] for r in endpoint.received}
            return any(producer.acked.get(i, 0) > killed for i in arrived)

        await eventually(resumed, RESUME_BOUND, "a delivery of an event published after the kill")
        resumed_after = time.monotonic() - killed
        await endpoint.wait_for(len(endpoint.received) + 50, 30)  # and it goes on
        producer.stop.set()
        await producing
        await eventually(
            lambda: (
                not Tally(producer.acked, endpoint.received, killed).missing(
                    [i for i, t in producer.acked.items() if t > killed]
                )
            ),
            30,
            "every event published after the kill",
        )
        tally = Tally(producer.acked, endpoint.received, killed)
        print(
            f"cluster failover: delivery resumed {resumed_after:.2f}s after the kill; "
            f"{len(tally.lost)} of {len(tally.last_second)} events acknowledged in the last "
            f"second before it lost (the replication window); {tally.duplicates} duplicates"
        )
        assert tally.missing(tally.before) == [], "an event acknowledged before the kill"
        assert all(proc.poll() is None for proc in procs), "a process exited"
    finally:
        producer.stop.set()
        await asyncio.gather(producing, return_exceptions=True)
        redis_cluster.recover(victim)
    stop_running(procs)
