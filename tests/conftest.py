"""Fixtures: a real redis-server on a free port for the whole run, partner endpoints on
loopback, and notifier as real subprocesses. Shared helpers live in tests/helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from notifier import config
from notifier.config import Settings
from notifier.testing import Endpoint, RedisServer, Responder, ok
from notifier.testing_cluster import RedisCluster
from tests.helpers import BASE_ENV, EndpointFactory, Spawn


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.exit(str(exc), 2)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three primaries with a replica each, for the whole run (started by
    the first test that asks for it). A test that kills a node brings it back (`recover`)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except RuntimeError:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `cluster` runs twice: on one Redis, and on the Redis Cluster."""
    if metafunc.definition.get_closest_marker("cluster") and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["redis", "cluster"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Where a test's notifier runs: `redis` (one redis-server) or `cluster`."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture
async def redis(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A client of the test's Redis, emptied: on the Cluster, of every primary."""
    if backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        client: Redis = ClusterClient.from_url(cluster.url)  # type: ignore[assignment]
        await client.flushall(target_nodes=ClusterClient.PRIMARIES)  # type: ignore[call-arg]
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        if server.proc is None:
            server.start()
        client = Redis.from_url(server.url)
        await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a notifier under test; tests may change it before starting one."""
    if backend == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return {**BASE_ENV, "REDIS_URL": cluster.url, "NOTIFIER_REDIS_CLUSTER": "1"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {**BASE_ENV, "REDIS_URL": server.url}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return config.load(env)


@pytest.fixture
async def endpoint_factory() -> AsyncIterator[EndpointFactory]:
    started: list[Endpoint] = []

    async def make(responder: Responder = ok) -> Endpoint:
        endpoint = await Endpoint(responder).start()
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        await endpoint.stop()


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[Spawn]:
    """Start `notifier <command>` as a real subprocess; all are killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc_env = {**os.environ, **env, **(extra or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "notifier", *args],
            env=proc_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
