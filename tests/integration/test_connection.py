"""notifier's Redis client: redis-py with commands packed by hiredis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
import structlog.testing
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from notifier import service
from notifier.config import Settings
from notifier.redis.connection import connect
from notifier.testing import RedisServer

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "notifier:{ptn_1}:stream", b"k2", 1.5, 0.1, 1e20, -3, 0),
    ("SET", "clé", "é" * 3, "PX", 1_700_000_000_000),
    ("XADD", "notifier:events", "*", "data", b'{"n": 1}' * 10_000),  # past redis-py's cutoff
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"x"),
]


async def test_commands_are_packed_by_hiredis_as_redis_py_would(
    redis: Redis, settings: Settings
) -> None:
    client = connect(settings)
    try:
        packing = client.connection_pool.connection_class
        assert packing.__name__ == "HiredisConnection"
        ours, theirs = packing(), Connection()
        for args in COMMANDS:
            assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))
        bad: Any
        for bad in (None, True):
            with pytest.raises(DataError):
                ours.pack_command("SET", "k", bad)
        # and Redis reads them so
        await client.set("clé", "é" * 3)
        assert await client.get("clé") == "ééé".encode()
        assert set(await client.config_get("maxmemory")) == {"maxmemory"}
    finally:
        await client.aclose()


async def test_start_up_warns_of_a_redis_that_can_lose_messages(
    tmp_path: Path, redis: Redis, settings: Settings
) -> None:
    """Read with INFO (which managed services and the ACL user allow), not CONFIG GET."""
    careless = RedisServer(
        tmp_path, args=["--appendonly", "no", "--maxmemory-policy", "allkeys-lru"]
    )
    careless.start()
    try:
        said = {}
        for url in (careless.url, settings.redis_url):
            checked = msgspec.structs.replace(settings, redis_url=url)
            client = connect(checked)
            with structlog.testing.capture_logs() as logged:
                await service.check_redis(client, checked)
            await client.aclose()
            said[url] = " | ".join(entry["event"] for entry in logged)
    finally:
        careless.stop()
    assert "appendonly=no" in said[careless.url] and "noeviction" in said[careless.url]
    assert said[settings.redis_url] == ""  # the suite's Redis: AOF on, noeviction
