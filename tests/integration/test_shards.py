"""Partners spread over shards: everything delivered whatever shard a partner is in, a process
with another shard count than the deployment's refuses to start, and the count changed while
everything is stopped loses and repeats nothing."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from notifier import config
from notifier.redis.keys import Keyspace
from tests.helpers import (
    EndpointFactory,
    cli,
    eventually,
    idle,
    publish,
    register,
    running,
)


async def test_partners_in_every_shard_get_their_events(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    settings = config.load({**env, "NOTIFIER_SHARDS": "3"})
    space = settings.keyspace()
    endpoints = [await endpoint_factory() for _ in range(6)]
    ids = [
        (await register(redis, settings, f"p{n}", e.url, ["order.created"]))[0]
        for n, e in enumerate(endpoints)
    ]
    assert len({space.shard_of(pid).number for pid in ids}) > 1  # they do spread
    async with running(settings):
        for n in range(20):
            await publish(redis, "order.created", {"n": n}, event_id=f"ord-{n}")
        await publish(redis, "order.created", {"n": 0}, event_id="ord-0")  # a duplicate
        for endpoint in endpoints:
            await endpoint.wait_for(20)
        await idle(redis)
    for endpoint in endpoints:
        assert sorted(b["data"]["n"] for b in endpoint.bodies()) == list(range(20))
        assert len({r.headers["webhook-id"] for r in endpoint.received}) == 20


def test_a_process_with_another_shard_count_refuses_to_start(env: dict[str, str]) -> None:
    assert cli({**env, "NOTIFIER_SHARDS": "3"}, "shards", "show", "--json").returncode == 0
    # the first command to reach Redis records the layout
    first = cli({**env, "NOTIFIER_SHARDS": "3"}, "partners", "list", "--json")
    assert first.returncode == 0, first.stderr
    assert cli({**env, "NOTIFIER_SHARDS": "2"}, "partners", "list").returncode == 1
    refused = cli({**env, "NOTIFIER_SHARDS": "2"}, "router")
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "NOTIFIER_SHARDS is 2 but the deployment in this Redis has 3 shards" in line
    assert "notifier shards move --to 2" in line


async def test_changing_the_shard_count_while_stopped_delivers_everything_once(
    redis: Redis, env: dict[str, str], endpoint_factory: EndpointFactory
) -> None:
    three = config.load({**env, "NOTIFIER_SHARDS": "3"})
    endpoints = [await endpoint_factory() for _ in range(6)]
    for n, endpoint in enumerate(endpoints):
        await register(redis, three, f"p{n}", endpoint.url, ["order.created"])
    async with running(three, deliver=False):  # routed, nothing delivered yet
        for n in range(10):
            await publish(redis, "order.created", {"n": n})
        await eventually(lambda: _routed(redis), 10, "every event to be routed")
    assert all(not e.received for e in endpoints)

    moved = cli({**env, "NOTIFIER_SHARDS": "3"}, "shards", "move", "--to", "2", "--json")
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["shards"] == 2 and report["partners_moved"] > 0
    shown = cli({**env, "NOTIFIER_SHARDS": "2"}, "shards", "show", "--json")
    assert json.loads(shown.stdout)["recorded"] == 2

    two = config.load({**env, "NOTIFIER_SHARDS": "2"})
    for shard in Keyspace(3).shards[2:]:  # the shard that went is empty
        assert await redis.zcard(shard.ready) == 0
    async with running(two):
        for endpoint in endpoints:
            await endpoint.wait_for(10)
        await idle(redis)
    for endpoint in endpoints:
        assert sorted(b["data"]["n"] for b in endpoint.bodies()) == list(range(10))


async def _reported(redis: Redis) -> bool:
    return await redis.hlen("notifier:processes") > 0


async def _routed(redis: Redis) -> bool:
    return await redis.xlen("notifier:events") == 0


async def test_moving_shards_is_refused_while_a_process_runs(
    redis: Redis, env: dict[str, str]
) -> None:
    settings = config.load(env)
    async with running(settings):
        await eventually(lambda: _reported(redis), 10, "the process's report")
        refused = cli(env, "shards", "move", "--to", "4")
    assert refused.returncode == 1
    assert "stop them all first" in refused.stderr
