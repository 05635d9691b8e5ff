"""Auto-pipelining against a real Redis: batching, order, errors, and scripts Redis forgot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from notifier.redis.autopipeline import AutoPipeline

APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"
FAIL = "return redis.error_reply('ERR refused ' .. ARGV[1])"


async def test_calls_of_one_turn_share_a_round_trip_and_keep_their_order(redis: Redis) -> None:
    calls = AutoPipeline(redis)
    append = redis.register_script(APPEND)
    await calls.call(append, ["log"], ["warm-up"])  # loads the script
    await redis.delete("log")
    replies = await asyncio.gather(*(calls.call(append, ["log"], [n]) for n in range(50)))
    assert replies == list(range(1, 51))
    assert await redis.lrange("log", 0, -1) == [str(n).encode() for n in range(50)]


async def test_calls_made_while_a_pipeline_is_out_go_in_the_next_one(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = AutoPipeline(redis)
    append = redis.register_script(APPEND)
    await calls.call(append, ["log"], ["warm-up"])
    sent = []
    original = redis.pipeline

    def counting_pipeline(*args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(redis, "pipeline", counting_pipeline)
    first = [calls.call(append, ["log"], [n]) for n in range(3)]
    await asyncio.sleep(0)  # the first pipeline is now out
    second = [calls.call(append, ["log"], [n]) for n in range(3, 10)]
    await asyncio.gather(*first, *second)
    assert len(sent) == 2


async def test_an_error_reaches_only_its_own_call(redis: Redis) -> None:
    calls = AutoPipeline(redis)
    append = redis.register_script(APPEND)
    fail = redis.register_script(FAIL)
    await calls.call(append, ["log"], ["warm-up"])
    with pytest.raises(ResponseError, match="refused"):
        await calls.call(fail, [], ["alone"])
    results = await asyncio.gather(
        calls.call(append, ["log"], ["a"]),
        calls.call(fail, [], ["x"]),
        calls.call(append, ["log"], ["b"]),
        return_exceptions=True,
    )
    assert results[0] == 2 and results[2] == 3
    assert isinstance(results[1], ResponseError) and "refused x" in str(results[1])


async def test_scripts_flushed_by_redis_are_loaded_again(redis: Redis) -> None:
    calls = AutoPipeline(redis)
    append = redis.register_script(APPEND)
    await calls.call(append, ["log"], ["warm-up"])
    await redis.script_flush()
    replies = await asyncio.gather(*(calls.call(append, ["log"], [n]) for n in range(5)))
    assert replies == [2, 3, 4, 5, 6]
    await redis.script_flush()
    assert await calls.call(append, ["log"], ["alone"]) == 7


async def test_a_lost_connection_fails_every_call_in_the_pipeline(redis_server: object) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    calls = AutoPipeline(client)
    append = client.register_script(APPEND)
    results = await asyncio.gather(
        *(calls.call(append, ["log"], [n]) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await client.aclose()


async def test_a_caller_that_gives_up_does_not_break_the_others(redis: Redis) -> None:
    calls = AutoPipeline(redis)
    append = redis.register_script(APPEND)
    await calls.call(append, ["log"], ["warm-up"])
    abandoned = calls.call(append, ["log"], ["abandoned"])
    kept = calls.call(append, ["log"], ["kept"])
    abandoned.cancel()
    # a call once made is still sent (like a request already on the wire): its caller only
    # stops waiting for the reply
    assert await kept == 3
    assert await calls.call(append, ["log"], ["after"]) == 4
    assert await redis.lrange("log", 0, -1) == [b"warm-up", b"abandoned", b"kept", b"after"]
