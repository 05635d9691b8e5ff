"""The bench's processes, partners, events and waits.

`Bench` is one run's redis-server (`notifier.testing.RedisServer`), the endpoint process
(`endpoints.py`), and the notifier processes it spawns (`notifier router|deliver|run`, real
subprocesses), with ways to register partners, publish events and wait for deliveries to land;
`progress` is the line the bench prints as it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis

from benchmarks.endpoints import Endpoints
from benchmarks.meters import CpuMeter, descendants, total_commands
from benchmarks.sizes import DATA, INGRESS, PUBLISH_BATCH, BenchError, Sizes, WaitTimeout
from notifier import config
from notifier.models import PartnerIn
from notifier.redis.keys import Keyspace
from notifier.store import Store
from notifier.testing import RedisServer, eventually, free_port

KS = Keyspace()

ROOT = Path(__file__).resolve().parents[2]


def die_with_parent() -> None:
    """preexec_fn: a child is killed if the bench dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Bench:
    """One benchmark run's redis-server, endpoint process and notifier processes."""

    sizes: Sizes
    aof: str = "no"
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="notifier-bench-")))
    procs: list[Proc] = field(default_factory=list)
    #: The notifier processes of the current measurement; `fresh` stops them.
    notifiers: list[Proc] = field(default_factory=list)
    server: RedisServer | None = None
    endpoint_proc: Proc | None = None
    _endpoints: Endpoints | None = None
    _clients: dict[int, Any] = field(default_factory=dict)
    _stores: dict[int, Store] = field(default_factory=dict)

    async def start(self) -> None:
        self.server = RedisServer(self.tmp / "redis")
        self.server.start()
        redis = self.client()
        if self.aof == "no":
            await redis.config_set("appendonly", "no")
        else:
            await redis.config_set("appendfsync", self.aof)
        out = self.tmp / "endpoints.json"
        self.endpoint_proc = self.spawn(
            "endpoints",
            [sys.executable, "-m", "benchmarks.endpoints", str(out)],
            env=child_env(),
        )
        deadline = time.monotonic() + 30
        while not out.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the endpoint process did not start within 30 s")
            await asyncio.sleep(0.05)
        self._endpoints = Endpoints(f"http://127.0.0.1:{json.loads(out.read_text())['control']}")

    @property
    def endpoints(self) -> Endpoints:
        assert self._endpoints is not None, "Bench.start() first"
        return self._endpoints

    @property
    def redis(self) -> Any:
        """A client of database 0."""
        return self.client()

    @property
    def endpoint_pid(self) -> int:
        assert self.endpoint_proc is not None
        return self.endpoint_proc.pid

    def meter(self, pids: dict[str, int]) -> CpuMeter:
        """The CPU of these processes of notifier's, with the bench's redis-server and the
        endpoints they send to, from now on."""
        return CpuMeter({**pids, "redis": self.redis_pid, "endpoints": self.endpoint_pid})

    @property
    def redis_pid(self) -> int:
        assert self.server is not None and self.server.proc is not None
        return self.server.proc.pid

    def redis_url(self, db: int = 0) -> str:
        assert self.server is not None, "Bench.start() first"
        return f"redis://127.0.0.1:{self.server.port}/{db}"

    def client(self, db: int = 0) -> Any:
        if db not in self._clients:
            self._clients[db] = Redis.from_url(self.redis_url(db))
        return self._clients[db]

    def env(self, db: int = 0) -> dict[str, str]:
        """The environment of a notifier process working on database `db`."""
        return {
            **os.environ,
            "REDIS_URL": self.redis_url(db),
            "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8",
            "NOTIFIER_ALLOW_HTTP": "1",
            "NOTIFIER_ADMIN_TOKEN": "bench-admin-token",
            "NOTIFIER_LOG_LEVEL": "warning",
            "NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}",
            "PYTHONUNBUFFERED": "1",
            # several processes of a role run side by side: no fixed metrics port each
            "NOTIFIER_METRICS_ADDR": "none",
        }

    # processes

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        stdout: int = subprocess.DEVNULL,
    ) -> Proc:
        log = self.tmp / f"{len(self.procs) + 1:02d}-{name.replace(' ', '-')}.log"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=stdout, stderr=err, preexec_fn=die_with_parent
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def notifier(
        self, role: str, *args: str, db: int = 0, env: dict[str, str] | None = None
    ) -> Proc:
        """`notifier <role> <args>` on database `db` (or in `env`), stopped by the next
        `fresh`."""
        proc = self.spawn(
            " ".join((role, *args)),
            [sys.executable, "-m", "notifier", role, *args],
            env=env or self.env(db),
        )
        self.notifiers.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after `grace` s; children it leaves behind are killed too."""
        if proc in self.notifiers:
            self.notifiers.remove(proc)
        children = descendants(proc.pid)
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
        deadline = time.monotonic() + grace
        for pid in children:
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def check_alive(self) -> None:
        """Raise BenchError with its log when a process of the measurement has exited."""
        for proc in [*self.notifiers, self.endpoint_proc]:
            if proc is not None and proc.popen.poll() is not None:
                raise BenchError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")

    async def fresh(self, grace: float = 3.0, flush: bool = True) -> None:
        """Before a measurement: no notifier process, zeroed endpoints, an empty Redis
        (unless not `flush`)."""
        for proc in list(self.notifiers):
            self.stop(proc, grace)
        if flush:
            await self.redis.flushall()
        await self.endpoints.reset()

    async def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=2.0)
        if self._endpoints is not None:
            await self._endpoints.close()
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        if self.server is not None and self.server.proc is not None:
            self.server.stop()

    # partners and events

    async def register(
        self, name: str, url: str, events: list[str], db: int = 0, **options: Any
    ) -> str:
        """Register a partner through notifier's Store; returns its id."""
        if db not in self._stores:
            self._stores[db] = Store(self.client(db), config.load(self.env(db)))
        body = msgspec.convert({"name": name, "url": url, "events": events, **options}, PartnerIn)
        partner, _ = await self._stores[db].create(body)
        return partner.id

    async def register_idle(self, count: int, url: str, db: int = 0) -> None:
        """`count` partners subscribed to types nobody publishes (`idle.<i>`), all posting
        to `url`, registered 20 at a time."""
        for start in range(0, count, 20):
            await asyncio.gather(
                *(
                    self.register(f"idle{i}", url, [f"idle.{i}"], db)
                    for i in range(start, min(count, start + 20))
                )
            )

    async def partners(self, count: int, db: int = 0) -> dict[str, str]:
        """`count` partners `p0`, `p1`, ..., partner i subscribed to `evt.i` only and
        posting to an endpoint of its own (its key is the partner's name) that answers 200
        at once; returns their names and ids."""
        names = [f"p{i}" for i in range(count)]
        urls = await self.endpoints.make(dict.fromkeys(names, "ok"))
        return {
            name: await self.register(
                name, urls[name], [f"evt.{i}"], db, max_in_flight=self.sizes.max_in_flight
            )
            for i, name in enumerate(names)
        }

    async def publish(
        self, types: Sequence[str], count: int, db: int = 0, first: int = 0, owned: bool = False
    ) -> None:
        """XADD `count` events to the ingress stream as a producer would, event i of type
        types[i % len(types)] (and with `owned` of owner `owner-<i % len(types)>`), in
        pipelines of PUBLISH_BATCH."""
        redis = self.client(db)
        for start in range(first, first + count, PUBLISH_BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(first + count, start + PUBLISH_BATCH)):
                    fields = {"type": types[i % len(types)], "data": DATA % (i, time.time())}
                    if owned:
                        fields["owner"] = f"owner-{i % len(types)}"
                    pipe.xadd(INGRESS, fields)
                await pipe.execute()

    async def publish_paced(
        self, types: Sequence[str], rate: float, seconds: float, first: int = 0, ids: bool = False
    ) -> int:
        """Publish at `rate` events/s for `seconds`, each XADDed when due (not in bursts), with
        `ids` a producer id each; returns how many."""
        redis = self.client()
        started = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1 - sent
            if due > 0:
                async with redis.pipeline(transaction=False) as pipe:
                    for i in range(first + sent, first + sent + due):
                        fields = {"type": types[i % len(types)], "data": DATA % (i, time.time())}
                        pipe.xadd(INGRESS, {**fields, "id": f"paced-{i}"} if ids else fields)
                    await pipe.execute()
                sent += due
            await asyncio.sleep(max(0.0, (sent + 1) / rate - (time.monotonic() - started)))
        return sent

    async def wait_delivered(self, want: dict[str, int], what: str) -> float:
        """Wait until each endpoint key has received `want[key]` requests; returns the time
        (time.time()) the last of them arrived."""
        got: dict[str, tuple[int, float]] = {}

        async def arrived() -> bool:
            nonlocal got
            self.check_alive()
            got = await self.endpoints.counts()
            return all(got.get(k, (0, 0.0))[0] >= n for k, n in want.items())

        await self.until(
            arrived,
            what,
            lambda: sum(min(got.get(k, (0, 0.0))[0], n) for k, n in want.items()),
            sum(want.values()),
        )
        return max(got[k][1] for k in want)

    async def wait_routed(self, streams: dict[str, int], db: int = 0) -> None:
        """Wait until the ingress stream is empty and each partner id's stream holds at least
        `streams[id]` messages."""
        redis = self.client(db)
        held = 0

        async def routed() -> bool:
            nonlocal held
            self.check_alive()
            async with redis.pipeline(transaction=False) as pipe:
                pipe.xlen(INGRESS)
                for pid in streams:
                    pipe.xlen(KS.partner(pid).stream)
                ingress, *lengths = await pipe.execute()
            held = sum(min(n, want) for n, want in zip(lengths, streams.values(), strict=True))
            return ingress == 0 and held == sum(streams.values())

        await self.until(
            routed, "the router to fill the partner streams", lambda: held, sum(streams.values())
        )

    async def until(
        self,
        check: Callable[[], Awaitable[Any]],
        what: str,
        got: Callable[[], int] = lambda: 0,
        want: int = 1,
    ) -> None:
        """`notifier.testing.eventually`, bounded by --timeout: WaitTimeout says how far
        `got()` came of `want`."""
        timeout = self.sizes.timeout
        try:
            await eventually(check, timeout, what)
        except AssertionError:
            raise WaitTimeout(what, got(), want, timeout) from None

    async def settle(self, most: float = 15.0, quiet: int = 20) -> float:
        """Wait (at most `most` s) until Redis has a quarter second with fewer than `quiet`
        commands: the start-up work of the processes (the router's first janitor pass over
        every partner, say) is done. Returns the seconds waited."""
        started = time.monotonic()
        last = await total_commands(self.redis)
        while time.monotonic() - started < most:
            await asyncio.sleep(0.25)
            self.check_alive()
            now = await total_commands(self.redis)
            if now - last - 1 < quiet:
                break
            last = now
        return time.monotonic() - started


def child_env() -> dict[str, str]:
    """The environment of the bench's own children: `benchmarks` importable."""
    path = os.pathsep.join(
        p for p in (str(ROOT / "scripts"), str(ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return {**os.environ, "PYTHONPATH": path}


def progress(text: str) -> None:
    """A line on stderr, with the time, saying what the bench does now."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
