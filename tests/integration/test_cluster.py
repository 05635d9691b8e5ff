"""notifier's client on a real Redis Cluster (`NOTIFIER_REDIS_CLUSTER=1`): it reaches every
primary, auto-pipelines script calls across them, and follows a primary's failover."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from functools import partial
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
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


async def as_readme_user(redis_cluster: RedisCluster, env: dict[str, str]) -> Redis:
    """notifier's client, as the README's ACL user created on every node (a replica may be
    promoted, and a cluster does not share ACL rules)."""
    password = secrets.token_urlsafe(18)
    rules = readme_acl_rules(password)
    for node in node_clients(redis_cluster):
        async with node:
            for words in (rules["redis"], rules["cluster"]):
                await node.execute_command(*words)  # type: ignore[no-untyped-call]
            await node.acl_log_reset()
    url = redis_cluster.url.replace("redis://", f"redis://notifier:{password}@")
    env.update({"REDIS_URL": url, "NOTIFIER_REDIS_CLUSTER": "1"})
    return connect(config.load(env), "notifier-test")


def node_of(cluster: ClusterClient, key: str) -> ClusterNode:
    node = cluster.get_node_from_key(key)
    assert node is not None, f"no node serves {key}"
    return node


def one_key_per_primary(cluster: ClusterClient) -> list[str]:
    """Keys under a hash tag each, one on every primary."""
    keys: dict[str, str] = {}
    for n in range(1000):
        key = f"notifier:{{t{n}}}:smoke"
        keys.setdefault(node_of(cluster, key).name, key)
    return list(keys.values())


async def replicated(redis_cluster: RedisCluster, key: str) -> bool:
    """Whether a replica holds `key` already (asked with READONLY, as the default user)."""
    for node in node_clients(redis_cluster, replicas_only=True):
        async with node:
            await node.execute_command("READONLY")  # type: ignore[no-untyped-call]
            with contextlib.suppress(ResponseError):  # MOVED: not its primary's slot
                if await node.get(key) == key.encode():
                    return True
    return False


async def test_the_factory_reaches_every_primary_and_follows_a_failover(
    redis_cluster: RedisCluster, env: dict[str, str]
) -> None:
    client = await as_readme_user(redis_cluster, env)
    cluster = cast(ClusterClient, client)
    killed: RedisServer | None = None
    try:
        await cluster.initialize()
        assert isinstance(client, ClusterClient)
        primaries = {f"127.0.0.1:{node.port}" for node in redis_cluster.primaries}
        assert {node.name for node in cluster.get_nodes()} >= primaries
        assert {n.connection_class.__name__ for n in cluster.get_nodes()} == {"HiredisConnection"}
        keys = one_key_per_primary(cluster)
        assert {node_of(cluster, key).name for key in keys} == primaries
        for key in keys:
            assert await client.set(key, key)
        assert [await client.get(k) for k in keys] == [k.encode() for k in keys]

        # script calls queued together go out as one pipeline routed by slot; the scripts are
        # not on the nodes yet (NOSCRIPT), so the AutoPipeline loads them
        script, auto = client.register_script(SET_GET), AutoPipeline(client)
        counters = [key.replace(":smoke", ":count") for key in keys]
        calls = (auto.call(script, [c], [n + 1]) for n, c in enumerate(counters))
        assert await asyncio.gather(*calls) == [b"1", b"2", b"3"]

        # kill the primary of the first key, once its replica has the key
        await eventually(partial(replicated, redis_cluster, keys[0]), 30, "the key replicated")
        port = int(node_of(cluster, keys[0]).port)
        killed = next(node for node in redis_cluster.primaries if node.port == port)
        redis_cluster.kill_primary(killed)
        await redis_cluster.promoted()

        async def follows() -> bool:
            try:
                value = await client.get(keys[0])
                counted = await auto.call(script, [counters[0]], [10])
            except REDIS_ERRORS:
                return False
            return bool(value == keys[0].encode() and counted == b"10")

        await eventually(follows, 30, "the client to follow the slot to the promoted replica")
        assert int(node_of(cluster, keys[0]).port) != killed.port
        # the promoted replica, met only now, packs with hiredis too
        assert {n.connection_class.__name__ for n in cluster.get_nodes()} == {"HiredisConnection"}
        assert [await client.get(k) for k in keys] == [k.encode() for k in keys]
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
