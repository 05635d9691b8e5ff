"""What every benchmark scenario shares: the bench's processes, partners, events and waits.

- `Bench`: one run's redis-server (`notifier.testing.RedisServer`), the endpoint process
  (`endpoints.py`), and the notifier processes it spawns (`notifier router|deliver|run`, real
  subprocesses), with ways to register partners, publish events and wait for deliveries to land.
- `throughput_run`: the measurement most scenarios make: warm up, publish, time the deliveries
  at the endpoints, and read every process's CPU, RSS and Redis's work meanwhile (`meters.py`).
- Figures: `figures.py`.

The machine is shared with whatever else runs on it, so figures that are compared are taken
side by side and repeated, and ratios are medians of the ratios of such pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
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
from benchmarks.meters import (
    Cpu,
    CpuMeter,
    commands_between,
    commandstats,
    descendants,
    peak_rss,
    redis_cpu,
    total_commands,
)
from notifier import config
from notifier.models import PartnerIn
from notifier.redis.keys import Keyspace
from notifier.store import Store
from notifier.testing import RedisServer, eventually, free_port

KS = Keyspace()

ROOT = Path(__file__).resolve().parents[2]
INGRESS = "notifier:events"
PUBLISH_BATCH = 500
#: A realistic order event, about 300 bytes of JSON; `sent_at` is time.time() at its XADD.
DATA = (
    '{"order_id": %d, "customer": {"id": "cus_7Hq2LmX9", "email": "jane@example.com"}, '
    '"total": 129.95, "currency": "EUR", "items": [{"sku": "SKU-10442", "qty": 2, '
    '"price": 39.99}, {"sku": "SKU-20918", "qty": 1, "price": 49.97}], '
    '"shipping": {"method": "express", "country": "DE"}, "sent_at": %.6f}'
)


class BenchError(RuntimeError):
    """A scenario cannot go on: its figures not measured yet are FAILED."""


class WaitTimeout(BenchError):
    """A wait ran past --timeout: the scenario's figures not measured yet are TIMEOUT."""

    def __init__(self, what: str, got: int, want: int, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {what}: {got:,}/{want:,}")


# --------------------------------------------------------------------------------------------
# sizes


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; `QUICK` is for CI."""

    partners: int = 50
    events: int = 20_000
    max_in_flight: int = 10
    rounds: int = 3
    latency_rate: float = 200.0
    latency_seconds: float = 10.0
    high_seconds: float = 5.0
    registered: int = 10_000
    receiving: int = 10
    routing_events: int = 10_000
    idle_seconds: float = 10.0
    healthy_events: int = 10_000
    backlog: int = 10_000
    hang_backlog: int = 1_000
    window: float = 5.0
    memory_events: int = 100_000
    memory_partners: int = 10
    big_bytes: int = 100 * 1024
    big_partners: int = 100
    owned_registered: int = 10_000
    pacing_seconds: float = 20.0
    timeout: float = 60.0


QUICK = Sizes(
    events=3_000,
    rounds=1,
    latency_seconds=3.0,
    high_seconds=2.0,
    routing_events=1_000,
    idle_seconds=3.0,
    healthy_events=500,
    backlog=1_000,
    hang_backlog=100,
    window=3.0,
    memory_events=5_000,
    owned_registered=2_000,
    pacing_seconds=4.0,
    timeout=30.0,
)


# --------------------------------------------------------------------------------------------
# the bench: processes, partners, events, waits


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


def expected(names: Sequence[str], events: int, first: int = 0) -> dict[str, int]:
    """Deliveries per partner of events first .. first + events - 1, event i going to
    names[i % len(names)] (its type is evt.<i % len(names)>)."""
    counts = dict.fromkeys(names, events // len(names))
    for i in range(first, first + events % len(names)):
        counts[names[i % len(names)]] += 1
    return counts


# --------------------------------------------------------------------------------------------
# the common measurement


@dataclass
class Run:
    """What one throughput measurement found."""

    deliveries: int
    seconds: float
    cpu: Cpu
    #: Process name (and "<name> workers", the largest child) -> peak RSS in bytes.
    rss: dict[str, int]
    redis_cpu: float
    commands: dict[str, tuple[int, float]]
    #: Deliveries beyond those expected: duplicates.
    extra: int

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds

    def us_per_delivery(self, name: str) -> float:
        return self.cpu.seconds.get(name, 0.0) / self.deliveries * 1e6


async def throughput_run(
    bench: Bench,
    names: list[str],
    procs: dict[str, Proc],
    events: int,
    db: int = 0,
    owned: bool = False,
) -> Run:
    """Warm up (one event per partner: processes up, connections open, start-up work done),
    then publish `events` events (event i to partner names[i % len]) and time them from the
    first XADD to the last arrival at the endpoints, watching `procs` and Redis meanwhile."""
    types = [f"evt.{i}" for i in range(len(names))]
    await bench.publish(types, len(types), db, owned=owned)
    await bench.wait_delivered(
        dict.fromkeys(names, 1), f"the warm-up deliveries (are {', '.join(procs)} up?)"
    )
    await bench.settle()
    want = {name: n + 1 for name, n in expected(names, events, first=len(types)).items()}
    meter = CpuMeter(
        {
            **{name: p.pid for name, p in procs.items()},
            "redis": bench.redis_pid,
            "endpoints": bench.endpoint_pid,
        }
    )
    cpu_before = await redis_cpu(bench.redis)
    commands_before = await commandstats(bench.redis)
    started = time.time()
    await bench.publish(types, events, db, first=len(types), owned=owned)
    last = await bench.wait_delivered(want, "the deliveries")
    cpu = meter.read()
    cpu_after = await redis_cpu(bench.redis)
    commands = commands_between(commands_before, await commandstats(bench.redis))
    rss: dict[str, int] = {}
    for name, proc in procs.items():
        rss[name] = peak_rss(proc.pid)
        children = [peak_rss(pid) for pid in descendants(proc.pid)]
        if children:
            rss[name + " workers"] = max(children)
    await asyncio.sleep(0.3)
    counts = await bench.endpoints.counts()
    extra = sum(counts[name][0] for name in names) - sum(want.values())
    return Run(events, last - started, cpu, rss, cpu_after - cpu_before, commands, extra)


# --------------------------------------------------------------------------------------------
# what was measured, where


def code_version() -> str:
    """The commit measured, and whether notifier's code differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()

    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", "notifier", "lua", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return head[:72].rstrip() + (" + uncommitted changes in notifier/lua" if dirty else "")


def machine_line() -> str:
    redis_version = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout
        redis_version = out.split("v=", 1)[1].split()[0]
    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio loop"
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    return (
        f"nproc={os.cpu_count()}{model}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, redis-server {redis_version}, {loop}"
    )


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
