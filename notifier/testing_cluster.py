"""A Redis Cluster on loopback for tests: six `redis-server --cluster-enabled yes` nodes (AOF,
noeviction, like every `RedisServer`) made into three primaries with a replica each by
`redis-cli --cluster create`. It can SIGKILL a primary, wait for its replica's promotion, and
bring the killed node back as a replica, so a session-wide cluster stays whole between tests.

A short node timeout (1 s) makes a failover take a few seconds rather than the default 15 s
timeout's half a minute."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from notifier.testing import RedisServer, free_port

NODE_TIMEOUT_MS = 1000


def _info(port: int, section: str) -> dict[str, Any]:
    with redis.Redis(port=port, socket_timeout=2) as client:
        reply: dict[str, Any] = client.info(section)
        return reply


def _cluster_info(port: int) -> dict[str, str]:
    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
        text: str = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
    if isinstance(text, dict):  # redis-py may parse the reply already
        return {str(k): str(v) for k, v in text.items()}
    return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)


class RedisCluster:
    """Six nodes: `primaries` and `replicas` say which is which now (they swap on failover)."""

    def __init__(self, workdir: Path, primaries: int = 3, replicas_each: int = 1) -> None:
        self.dir = workdir
        self.replicas_each = replicas_each
        self.nodes = [
            RedisServer(workdir / f"node-{n}", args=self._args(workdir / f"node-{n}"))
            for n in range(primaries * (1 + replicas_each))
        ]

    @staticmethod
    def _args(folder: Path) -> list[str]:
        return [
            *("--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf")),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
            # the bus is port + 10000 by default, past 65535 for many a free port
            *("--cluster-port", str(free_port())),
            # a replica takes over however long it was cut off: the test kills on purpose
            *("--cluster-replica-validity-factor", "0"),
        ]

    @property
    def alive(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.proc is not None]

    @property
    def url(self) -> str:
        """`redis://` of a node that is up: notifier finds the others from it."""
        return self.alive[0].url

    def roles(self) -> dict[int, str]:
        """Port -> `master` or `slave`, as the nodes that are up see each other."""
        with redis.Redis(port=self.alive[0].port, decode_responses=True) as client:
            # redis-py reads CLUSTER NODES into {"ip:port": {"flags": ...}}
            nodes: dict[str, Any] = client.execute_command("CLUSTER NODES")  # type: ignore[no-untyped-call]
        roles = {}
        for addr, node in nodes.items():
            flags = node["flags"].split(",")
            if "fail" not in flags and "fail?" not in flags:
                roles[int(addr.rpartition(":")[2])] = "master" if "master" in flags else "slave"
        return roles

    @property
    def primaries(self) -> list[RedisServer]:
        roles = self.roles()
        return [node for node in self.alive if roles.get(node.port) == "master"]

    @property
    def replicas(self) -> list[RedisServer]:
        roles = self.roles()
        return [node for node in self.alive if roles.get(node.port) == "slave"]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        binary = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        created = subprocess.run(
            [
                binary,
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                *("--cluster-replicas", str(self.replicas_each), "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-500:]}")
        self.wait_whole()

    def _whole(self) -> bool:
        for node in self.alive:
            info = _cluster_info(node.port)
            if info.get("cluster_state") != "ok" or int(info["cluster_known_nodes"]) != len(
                self.alive
            ):
                return False
        replicas = self.replicas
        if len(replicas) != len(self.alive) - len(self.nodes) // (1 + self.replicas_each):
            return False
        return all(_info(r.port, "replication")["master_link_status"] == "up" for r in replicas)

    def wait_whole(self, timeout: float = 60.0) -> None:
        """Until every node that is up says the cluster is ok, knows every other, and every
        replica has synced with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self._whole():
                    return
            except (redis.RedisError, OSError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError("the cluster did not come whole")

    def kill_primary(self, node: RedisServer | None = None) -> RedisServer:
        """SIGKILL `node` (a primary; the first one by default): no last write to its replica."""
        node = node or self.primaries[0]
        node.stop(signal.SIGKILL)
        return node

    async def promoted(self, timeout: float = 30.0) -> None:
        """Until a replica took the killed primary's slots and every node that is up says the
        cluster is ok again."""
        deadline = time.monotonic() + timeout
        primaries = len(self.nodes) // (1 + self.replicas_each)
        while time.monotonic() < deadline:
            try:
                states = {_cluster_info(node.port).get("cluster_state") for node in self.alive}
                if states == {"ok"} and len(self.primaries) == primaries:
                    return
            except (redis.RedisError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"no replica took over within {timeout:g}s")

    def recover(self, node: RedisServer) -> None:
        """Start a killed node again on its data: it rejoins as a replica of its successor."""
        node.start()
        self.wait_whole()

    def flushall(self) -> None:
        for node in self.primaries:
            with redis.Redis(port=node.port) as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                node.stop(signal.SIGKILL)
