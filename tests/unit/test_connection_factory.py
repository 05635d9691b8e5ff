"""The client the factory builds for each kind of REDIS_URL, before it connects anywhere:
its class, its connection class (packing with hiredis), TLS files and credentials."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from notifier import config
from notifier.redis.connection import SentinelRedis, connect
from notifier.testing_tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def kwargs_of(client: Redis) -> dict[str, Any]:
    found: dict[str, Any] = client.connection_pool.connection_kwargs
    return found


async def test_plain_tls_and_unix_urls(certs: Certificates) -> None:
    for url, packing in (
        ("redis://u:unit-pw-one@127.0.0.1:1/2", "HiredisConnection"),
        ("rediss://u:unit-pw-two@127.0.0.1:1/2", "HiredisSSLConnection"),
        ("unix:///run/redis.sock?db=3", "HiredisUnixDomainSocketConnection"),
    ):
        env = {"REDIS_URL": url, **(certs.client_env() if url.startswith("rediss") else {})}
        client = connect(config.load(env), "notifier-x")
        try:
            assert client.connection_pool.connection_class.__name__ == packing
            found = kwargs_of(client)
            assert found["client_name"] == "notifier-x" and found["driver_info"] is None
            if url.startswith("rediss"):
                assert (found["ssl_ca_certs"], found["ssl_certfile"], found["ssl_keyfile"]) == (
                    str(certs.ca),
                    str(certs.client_cert),
                    str(certs.client_key),
                )
        finally:
            await client.aclose()


async def test_a_sentinel_url_gives_sentinels_and_data_nodes_their_own_credentials(
    certs: Certificates,
) -> None:
    url = (
        "rediss+sentinel://app:unit-data%2Fpw@127.0.0.1:1,[::1]:2/mymaster/4"
        "?sentinel_username=watch&sentinel_password=unit-sentinel-pw"
    )
    client = connect(config.load({"REDIS_URL": url, **certs.client_env()}), "notifier-x")
    try:
        assert isinstance(client, SentinelRedis) and client.sentinels is not None
        assert client.connection_pool.connection_class.__name__ == (
            "HiredisSentinelManagedSSLConnection"
        )
        data = kwargs_of(client)
        assert (data["username"], data["password"], data["db"]) == ("app", "unit-data/pw", 4)
        assert data["ssl_ca_certs"] == str(certs.ca) and data["driver_info"] is None
        asked = [kwargs_of(sentinel) for sentinel in client.sentinels.sentinels]
        assert [(k["host"], k["port"]) for k in asked] == [("127.0.0.1", 1), ("::1", 2)]
        for sentinel, found in zip(client.sentinels.sentinels, asked, strict=True):
            assert sentinel.connection_pool.connection_class.__name__ == "HiredisSSLConnection"
            assert (found["username"], found["password"]) == ("watch", "unit-sentinel-pw")
            assert found["ssl_certfile"] == str(certs.client_cert)
    finally:
        await client.aclose()


async def test_a_cluster_client_takes_the_same_tls_settings(certs: Certificates) -> None:
    env = {"REDIS_URL": "rediss://u:unit-cluster-pw@127.0.0.1:1", "NOTIFIER_REDIS_CLUSTER": "1"}
    client = connect(config.load({**env, **certs.client_env()}), "notifier-x")
    try:
        assert isinstance(client, RedisCluster)
        found = client.connection_kwargs
        assert found["connection_class"].__name__ == "HiredisSSLConnection"
        assert [node.connection_class.__name__ for node in client.startup_nodes] == [
            "HiredisSSLConnection"
        ]
        assert (found["ssl_ca_certs"], found["ssl_keyfile"]) == (
            str(certs.ca),
            str(certs.client_key),
        )
        assert (found["username"], found["password"], found["driver_info"]) == (
            "u",
            "unit-cluster-pw",
            None,
        )
    finally:
        await client.aclose()
