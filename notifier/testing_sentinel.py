"""A primary with replicas behind Sentinel, on free loopback ports, for tests that fail over:
`SentinelGroup` starts it, says the `redis+sentinel://` URL notifier connects to, SIGKILLs the
primary and waits for the sentinels to promote a replica. Timeouts are short (down after 1 s,
failover timeout 5 s), so a failover takes a few seconds, not the minutes of the defaults."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from notifier.testing import RedisServer, answers_ping, free_port
from notifier.testing_tls import Certificates


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _synced(replica: redis.Redis) -> bool:
    info: Any = replica.info("replication")
    return bool(info["master_link_status"] == "up")


class SentinelGroup:
    """One primary, `replicas` replicas and `count` sentinels watching them as `service`.

    With `tls` every node and sentinel serves TLS only, with client certificates; with
    `password` the data nodes require it (the replicas and sentinels are given it), with
    `sentinel_password` the sentinels do."""

    def __init__(
        self,
        workdir: Path,
        service: str = "mymaster",
        replicas: int = 1,
        count: int = 3,
        *,
        tls: Certificates | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
    ) -> None:
        self.dir = workdir
        self.service = service
        self.tls = tls
        self.password = password
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.primary = RedisServer(workdir / "primary", args=auth, tls=tls)
        self.replicas = [
            RedisServer(
                workdir / f"replica-{n}",
                args=[*auth, "--replicaof", "127.0.0.1", str(self.primary.port)],
                tls=tls,
            )
            for n in range(replicas)
        ]
        self.sentinel_ports = [free_port() for _ in range(count)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def url(self, db: int = 0, credentials: str = "") -> str:
        """The URL notifier is given; `credentials` (`user:password@`) are the data nodes'."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"{scheme}://{credentials}{hosts}/{self.service}/{db}{query}"

    def options(self, password: str | None) -> dict[str, Any]:
        """redis-py's options for a node (the data nodes' `password`) or a sentinel's."""
        found: dict[str, Any] = {"password": password}
        if self.tls is not None:
            found |= {
                "ssl": True,
                "ssl_ca_certs": str(self.tls.ca),
                "ssl_certfile": str(self.tls.client_cert),
                "ssl_keyfile": str(self.tls.client_key),
            }
        return found

    def _client(self, port: int, password: str | None) -> redis.Redis:
        return redis.Redis(port=port, **self.options(password))

    def _sentinel_conf(self, port: int) -> Path:
        folder = self.dir / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"  # Sentinel rewrites its file: one each, writable
        quorum = len(self.sentinel_ports) // 2 + 1
        listen = ["--port", str(port)] if self.tls is None else self.tls.server_args(port)
        lines = [
            f"{listen[n].removeprefix('--')} {listen[n + 1]}" for n in range(0, len(listen), 2)
        ]
        lines += [
            "bind 127.0.0.1",
            f"dir {folder}",
            "loglevel warning",
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} {quorum}",
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}",
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.service} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {self.service} {self.password}")
        if self.sentinel_password:  # asked of clients, and of each other
            lines.append(f"requirepass {self.sentinel_password}")
            lines.append(f"sentinel sentinel-pass {self.sentinel_password}")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        for server in self.servers:
            server.start()
        for replica in self.replicas:
            with self._client(replica.port, self.password) as client:
                _wait(partial(_synced, client), f"replica {replica.port} to sync")
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for port in self.sentinel_ports:
            self.sentinels.append(
                subprocess.Popen(
                    [binary, str(self._sentinel_conf(port)), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.sentinel_ports:
            _wait(partial(answers_ping, port, self.tls), f"sentinel {port} to start")
            with self._client(port, self.sentinel_password) as client:
                # a failover needs a majority of sentinels that know each other and the replicas
                _wait(
                    partial(self._knows_all, client),
                    f"sentinel {port} to know its peers and the replicas",
                )

    def _knows_all(self, sentinel: redis.Redis) -> bool:
        state: Any = sentinel.sentinel_master(self.service)
        replicas: Any = sentinel.sentinel_slaves(self.service)
        return bool(
            state["num-other-sentinels"] == len(self.sentinel_ports) - 1
            and len(replicas) == len(self.replicas)
        )

    def kill_primary(self) -> None:
        """SIGKILL the primary: no shutdown, no last write to its replicas."""
        self.primary.stop(signal.SIGKILL)

    async def promoted(self, timeout: float = 30.0) -> RedisServer:
        """The replica the sentinels promote in place of the killed primary, once every
        sentinel names it and it answers as a primary."""
        by_port = {server.port: server for server in self.replicas}
        sentinel_options = self.options(self.sentinel_password)
        clients = [AsyncRedis(port=port, **sentinel_options) for port in self.sentinel_ports]
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                named = set()
                for client in clients:
                    addr: Any
                    try:
                        addr = await client.sentinel_get_master_addr_by_name(self.service)
                    except (redis.RedisError, OSError):
                        addr = None
                    named.add(int(addr[1]) if addr else None)
                if len(named) == 1 and (port := named.pop()) in by_port:
                    async with AsyncRedis(port=port, **self.options(self.password)) as node:
                        role: Any = await node.role()
                    if role[0] in (b"master", "master"):
                        return by_port[port]
                await asyncio.sleep(0.05)
        finally:
            for client in clients:
                await client.aclose()
        raise AssertionError(f"no replica was promoted within {timeout:g}s")

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.sentinels = []
        for server in self.servers:
            if server.proc is not None:
                server.stop(signal.SIGKILL)
