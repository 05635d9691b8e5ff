"""notifier's client on a real Redis Cluster (`NOTIFIER_REDIS_CLUSTER=1`): it reaches every
primary, auto-pipelines script calls across them, and follows a primary's failover."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import ResponseError

from notifier import config
from notifier.redis.autopipeline import AutoPipeline
from notifier.redis.connection import REDIS_ERRORS, connect
from notifier.testing import RedisServer
from notifier.testing_cluster import RedisCluster
from tests.helpers import eventually, readme_acl_rules

pytestmark = pytest.mark.slow

#: A script of commands the README's ACL rule allows, as notifier's own scripts are.
SET_GET = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('GET', KEYS[1])"


def node_clients(redis_cluster: RedisCluster, replicas_only: bool = False) -> list[Redis]:
    """A client of each node that is up (or each replica), as its default user."""
    nodes = redis_cluster.replicas if replicas_only else redis_cluster.alive
    return [Redis(port=node.port) for node in nodes]


async def test_the_factory_reaches_every_primary_and_follows_a_failover(
    redis_cluster: RedisCluster, env: dict[str, str]
) -> None:
    # as the README's ACL user, on every node: a replica may be promoted
    password = secrets.token_urlsafe(18)
    for node in node_clients(redis_cluster):
        async with node:
            rules = readme_acl_rules(password)
            for words in (rules["redis"], rules["cluster"]):
                await node.execute_command(*words)  # type: ignore[no-untyped-call]
            await node.acl_log_reset()
    url = redis_cluster.url.replace("redis://", f"redis://notifier:{password}@")
    env.update({"REDIS_URL": url, "NOTIFIER_REDIS_CLUSTER": "1"})
    client = connect(config.load(env), "notifier-test")
    cluster = cast(ClusterClient, client)
    killed: RedisServer | None = None
    try:
        await cluster.initialize()
        assert isinstance(client, ClusterClient)
        primaries = {f"127.0.0.1:{node.port}" for node in redis_cluster.primaries}
        nodes = cluster.get_nodes()
        assert {node.name for node in nodes} >= primaries
        assert {node.connection_class.__name__ for node in nodes} == {"HiredisConnection"}

        # one key per primary, each under a hash tag of its own
        keys: dict[str, str] = {}
        for n in range(1000):
            key = f"notifier:{{t{n}}}:smoke"
            keys.setdefault(cluster.get_node_from_key(key).name, key)
        assert set(keys) == primaries
        for key in keys.values():
            assert await client.set(key, key)
        assert [await client.get(k) for k in keys.values()] == [k.encode() for k in keys.values()]

        # script calls queued together go out as one pipeline routed by slot; the scripts are
        # not on the nodes yet (NOSCRIPT), so the AutoPipeline loads them
        script = client.register_script(SET_GET)
        auto = AutoPipeline(client)
        counters = [key.replace(":smoke", ":count") for key in keys.values()]
        replies = await asyncio.gather(
            *(auto.call(script, [c], [n + 1]) for n, c in enumerate(counters))
        )
        assert replies == [b"1", b"2", b"3"]

        # kill the primary of the first key, once its replica has the key
        first = next(iter(keys.values()))
        holder = cluster.get_node_from_key(first)

        async def replicated() -> bool:
            for node in node_clients(redis_cluster, replicas_only=True):
                async with node:
                    await node.execute_command("READONLY")  # type: ignore[no-untyped-call]
                    with contextlib.suppress(ResponseError):  # MOVED: not its primary's slot
                        if await node.get(first) == first.encode():
                            return True
            return False

        await eventually(replicated, 30, "the key on the replica of its primary")
        killed = next(node for node in redis_cluster.primaries if node.port == int(holder.port))
        redis_cluster.kill_primary(killed)
        await redis_cluster.promoted()

        async def follows() -> bool:
            try:
                value = await client.get(first)
                counted = await auto.call(script, [counters[0]], [10])
            except REDIS_ERRORS:
                return False
            return bool(value == first.encode() and counted == b"10")

        await eventually(follows, 30, "the client to follow the slot to the promoted replica")
        assert int(cluster.get_node_from_key(first).port) != killed.port
        # the promoted replica, met only now, packs with hiredis too
        assert {n.connection_class.__name__ for n in cluster.get_nodes()} == {"HiredisConnection"}
        assert [await client.get(k) for k in keys.values()] == [k.encode() for k in keys.values()]
        for node in node_clients(redis_cluster):
            async with node:
                assert await node.acl_log() == [], "commands the README's rules lack"
    finally:
        await client.aclose()
        if killed is not None:
            redis_cluster.recover(killed)
        for node in node_clients(redis_cluster):
            async with node:
                await node.acl_deluser("notifier")
