"""What every benchmark scenario shares: the processes, the endpoints, the readers, the figures.

- `Bench`: one run's redis-server (`notifier.testing.RedisServer`), the endpoint process, and
  the notifier processes it spawns (`notifier router|deliver|run`, real subprocesses), with
  ways to register partners, publish events and wait for deliveries to land.
- The endpoint process (`python -m benchmarks.toolkit endpoints OUT`): one
  `notifier.testing.Endpoint` per partner key, each on a port of its own, answering 200 at
  once (`ok`), 500 (`fail`) or after HANG_SECONDS (`hang`); a small control app reports what
  they received. A process of its own: receiving costs neither the bench nor notifier CPU.
- Readers: CPU seconds and peak RSS of a process and its children (/proc), the machine's busy
  time, Redis's INFO cpu, commandstats, stats and memory.
- `throughput_run`: the measurement most scenarios make: warm up, publish, time the deliveries
  at the endpoints, and read every process's CPU, RSS and Redis's work meanwhile.
- Figures: `Figure` rows with a unit and maybe a goal, collected in `Results`.

The machine is shared with whatever else runs on it, so figures that are compared are taken
side by side and repeated, and ratios are medians of the ratios of such pairs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from redis.asyncio import Redis

from notifier import config
from notifier.models import PartnerIn
from notifier.redis.keys import Keyspace
from notifier.store import Store
from notifier.testing import Endpoint, RedisServer, Responder, eventually, free_port, ok

KS = Keyspace()

ROOT = Path(__file__).resolve().parents[2]
INGRESS = "notifier:events"
#: The `hang` endpoints answer after this long: the default NOTIFIER_REQUEST_TIMEOUT.
HANG_SECONDS = 10.0
PUBLISH_BATCH = 500
#: A realistic order event, about 300 bytes of JSON; `sent_at` is time.time() at its XADD.
DATA = (
    '{"order_id": %d, "customer": {"id": "cus_7Hq2LmX9", "email": "jane@example.com"}, '
    '"total": 129.95, "currency": "EUR", "items": [{"sku": "SKU-10442", "qty": 2, '
    '"price": 39.99}, {"sku": "SKU-20918", "qty": 1, "price": 49.97}], '
    '"shipping": {"method": "express", "country": "DE"}, "sent_at": %.6f}'
)
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A scenario cannot go on: its figures not measured yet are FAILED."""


class WaitTimeout(BenchError):
    """A wait ran past --timeout: the scenario's figures not measured yet are TIMEOUT."""

    def __init__(self, what: str, got: int, want: int, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s waiting for {what}: {got:,}/{want:,}")


# --------------------------------------------------------------------------------------------
# figures


@dataclass(frozen=True)
class Goal:
    """What an issue asks of a figure: `op` is >=, <=, < or ~ (|value| below `bound`)."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return {
            ">=": value >= self.bound,
            "<=": value <= self.bound,
            "<": value < self.bound,
            "~": abs(value) < self.bound,
        }[self.op]

    def __str__(self) -> str:
        if self.op == "~":
            return f"~0 (< {self.bound:g})"
        return f"{self.op} {self.bound:g}"


@dataclass
class Figure:
    """One row of the table. Scenario modules declare theirs up front (FIGURES), so a scenario
    that fails still prints a row for each, saying so."""

    key: str
    section: int
    label: str
    unit: str
    goal: Goal | None = None
    value: float | None = None
    #: ok, TIMEOUT, FAILED or not run
    status: str = "not run"
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None or self.value is None:
            return None
        return self.goal.met(self.value)

    @property
    def shown(self) -> str:
        return number(self.value) if self.value is not None else self.status


def number(value: float) -> str:
    """About three significant figures, thousands separated: 25,310 / 312 / 25.3 / 0.61;
    whole numbers whole."""
    size = abs(value)
    if size >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Results:
    """Every figure of the run, in the order declared, and the sections' headings."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.headings: dict[int, str] = {}

    def declare(self, figures: Iterable[Figure]) -> None:
        self.figures += [dataclasses.replace(f) for f in figures]

    def get(self, key: str) -> Figure:
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    def put(self, key: str, value: float, detail: str = "") -> None:
        figure = self.get(key)
        figure.value, figure.status, figure.detail = value, "ok", detail

    def add_after(self, key: str, figure: Figure) -> None:
        """A row only known once measured (Redis's top commands), after the row `key`."""
        at = self.figures.index(self.get(key)) + 1
        while at < len(self.figures) and self.figures[at].key.startswith(key + "."):
            at += 1
        figure.status = "ok"
        self.figures.insert(at, figure)

    def in_order(self) -> list[Figure]:
        """By section (scenario 1 measures section 3 too), then as declared."""
        return sorted(self.figures, key=lambda f: f.section)

    def value(self, key: str) -> float | None:
        with contextlib.suppress(KeyError):
            return self.get(key).value
        return None

    def unmeasured(self, figures: Iterable[Figure], status: str, reason: str) -> None:
        for spec in figures:
            figure = self.get(spec.key)
            if figure.status == "not run":
                figure.status, figure.detail = status, reason


def spread(values: Sequence[float], what: str = "runs") -> str:
    """`median of 3 runs: 2,910-3,105`, or nothing for one value."""
    if len(values) < 2:
        return ""
    return f"median of {len(values)} {what}: {number(min(values))}-{number(max(values))}"


def put_median(
    results: Results, key: str, values: Sequence[float], *notes: str, what: str = "runs"
) -> None:
    detail = "; ".join(n for n in (spread(values, what), *notes) if n)
    results.put(key, statistics.median(values), detail)


def put_ratio(
    results: Results, key: str, tops: Sequence[float], bottoms: Sequence[float], *notes: str
) -> None:
    """The median of the ratios of runs taken side by side (same round)."""
    ratios = [a / b for a, b in zip(tops, bottoms, strict=True) if b]
    if ratios:
        put_median(results, key, ratios, *notes, what="pairs")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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
# /proc readers (Linux)


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, 0 when it is gone."""
    stat = _stat(pid)
    if len(stat) < 13:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The living children of a process, their children, and so on."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if len(stat) > 1:
                parents.setdefault(int(stat[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def peak_rss(pid: int) -> int:
    """The most resident memory a process has had (VmHWM), in bytes; 0 when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far, all cores (/proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal (guest is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Cpu:
    """CPU seconds each watched process (with its children) used over `wall` seconds, and the
    % of a core everything else on the machine used meanwhile."""

    seconds: dict[str, float]
    wall: float
    others: float

    def percent(self, name: str) -> float:
        return self.seconds.get(name, 0.0) / self.wall * 100


class CpuMeter:
    """Watches named processes, each with the children it has when the meter starts (the
    workers of `--processes N`), and this process as `bench`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.trees = {name: [pid, *descendants(pid)] for name, pid in pids.items()}
        self.trees["bench"] = [os.getpid()]
        self.before = self._seconds()
        self.machine = machine_busy_seconds()
        self.started = time.monotonic()

    def _seconds(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(pid) for pid in tree) for name, tree in self.trees.items()}

    def read(self) -> Cpu:
        wall = max(time.monotonic() - self.started, 1e-6)
        seconds = {name: now - self.before[name] for name, now in self._seconds().items()}
        machine = machine_busy_seconds() - self.machine
        return Cpu(seconds, wall, max(0.0, machine - sum(seconds.values())) / wall * 100)


# --------------------------------------------------------------------------------------------
# Redis INFO readers


async def redis_cpu(redis: Any) -> float:
    """redis-server's CPU seconds so far (INFO cpu: user + sys, all its threads)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def commandstats(redis: Any) -> dict[str, tuple[int, float]]:
    """Command name -> (calls, usec) so far; commands run inside scripts count too."""
    info = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in info.items()
    }


def commands_between(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> dict[str, tuple[int, float]]:
    zero = (0, 0.0)
    return {
        name: (calls - before.get(name, zero)[0], usec - before.get(name, zero)[1])
        for name, (calls, usec) in after.items()
        if calls > before.get(name, zero)[0]
    }


async def total_commands(redis: Any) -> int:
    """Commands Redis has processed so far (INFO stats); each reading is one more."""
    return int((await redis.info("stats"))["total_commands_processed"])


async def used_memory(redis: Any) -> int:
    return int((await redis.info("memory"))["used_memory"])


# --------------------------------------------------------------------------------------------
# the endpoint process


async def _fail(request: Any, n: int) -> Any:
    from aiohttp import web

    return web.Response(status=500, text="outage")


async def _hang(request: Any, n: int) -> Any:
    from aiohttp import web

    await asyncio.sleep(HANG_SECONDS)
    return web.Response(status=200)


RESPONDERS: dict[str, Responder] = {"ok": ok, "fail": _fail, "hang": _hang}


def _sent_at(body: bytes) -> float | None:
    """The publish time an event's data carries, from the body notifier POSTed."""
    try:
        sent = msgspec.json.decode(body)["data"]["sent_at"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return None
    return float(sent) if isinstance(sent, int | float) else None


def smoothed_rate(times: list[float], since: float, until: float, span: float) -> float | None:
    """Arrivals per second over [since, until], robust to bursts.

    A rate-limited sender sends in bursts of up to its limit about once a window, so
    count / seconds is off by up to a whole burst depending on where the edges fall (10% on
    a 5 s look at 50/second). Here each edge is the cumulative count averaged over `span`
    seconds (the limit's window), which takes out the phase of a periodic pattern; unlike
    a fitted slope, a sender that stops sending still shows as a lower rate.
    """
    if until - since <= 2 * span:
        return None
    steps = 200

    def level(start: float) -> float:
        return statistics.fmean(
            bisect.bisect_right(times, start + span * (k + 0.5) / steps) for k in range(steps)
        )

    return (level(until - span) - level(since)) / (until - span - since)


async def serve_endpoints(out: Path) -> None:
    """The endpoint process: Endpoints made on request by the bench, each on its own port,
    and a control app (its port written to `out`) reporting what they received."""
    from aiohttp import web

    made: dict[str, tuple[str, Endpoint]] = {}
    # Endpoint stamps arrivals with time.monotonic(); the bench compares them with time.time()
    offset = time.time() - time.monotonic()

    def arrivals(key: str) -> list[float]:
        return [r.at + offset for r in made[key][1].received] if key in made else []

    async def create(request: web.Request) -> web.Response:
        wanted: dict[str, str] = await request.json()
        for key, kind in wanted.items():
            if key not in made:
                made[key] = (kind, await Endpoint(RESPONDERS[kind]).start())
            elif made[key][0] != kind:
                raise web.HTTPBadRequest(text=f"endpoint {key} answers {made[key][0]}")
        return web.json_response({key: made[key][1].url for key in wanted})

    async def counts(request: web.Request) -> web.Response:
        return web.json_response(
            {
                key: [len(e.received), e.received[-1].at + offset]
                for key, (_, e) in made.items()
                if e.received
            }
        )

    async def window(request: web.Request) -> web.Response:
        """Requests of `key` that arrived in [since, until], the most in any `span` s, and
        their rate with the edges smoothed over `span` (see `smoothed_rate`)."""
        query = request.query
        times = arrivals(query["key"])
        since, until = float(query["since"]), float(query["until"])
        span = float(query.get("span", "1"))
        inside = times[bisect.bisect_left(times, since) : bisect.bisect_right(times, until)]
        best = low = 0
        for high, at in enumerate(inside):
            while at - inside[low] >= span:
                low += 1
            best = max(best, high - low + 1)
        return web.json_response(
            {
                "count": len(inside),
                "max_per_span": best,
                "rate": smoothed_rate(times, since, until, span),
            }
        )

    async def latencies(request: web.Request) -> web.Response:
        """Seconds from each event's publish (its `sent_at`) to its arrival."""
        found = []
        for key in request.query["keys"].split(","):
            for received in made[key][1].received if key in made else []:
                sent = _sent_at(received.body)
                if sent is not None:
                    found.append(received.at + offset - sent)
        return web.json_response(found)

    async def reset(request: web.Request) -> web.Response:
        for _, endpoint in made.values():
            endpoint.received.clear()
        return web.json_response({})

    app = web.Application(client_max_size=16 * MIB)
    app.router.add_post("/endpoints", create)
    app.router.add_get("/counts", counts)
    app.router.add_get("/window", window)
    app.router.add_get("/latencies", latencies)
    app.router.add_post("/reset", reset)
    await serve_control(app, out)
    for _, endpoint in made.values():
        await endpoint.stop()


async def serve_control(app: Any, out: Path) -> None:
    """Serve a process's control `app` on a free port, written to `out` as
    `{"control": port}`, until SIGTERM or SIGINT."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps({"control": port}))
    partial.rename(out)  # atomic: the bench never reads half a file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


class Endpoints:
    """The bench's side of the endpoint process."""

    def __init__(self, control: str) -> None:
        self.control = control
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def make(self, kinds: dict[str, str]) -> dict[str, str]:
        """Endpoints for these keys, answering as their kind (ok, fail, hang): their URLs."""
        async with self.http.post(f"{self.control}/endpoints", json=kinds) as resp:
            resp.raise_for_status()
            urls: dict[str, str] = await resp.json()
            return urls

    async def counts(self) -> dict[str, tuple[int, float]]:
        """Key -> (requests received, time.time() of the last one)."""
        async with self.http.get(f"{self.control}/counts") as resp:
            return {k: (int(v[0]), float(v[1])) for k, v in (await resp.json()).items()}

    async def window(
        self, key: str, since: float, until: float, span: float = 1.0
    ) -> dict[str, Any]:
        params = {"key": key, "since": repr(since), "until": repr(until), "span": repr(span)}
        async with self.http.get(f"{self.control}/window", params=params) as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def latencies(self, keys: Iterable[str]) -> list[float]:
        async with self.http.get(
            f"{self.control}/latencies", params={"keys": ",".join(keys)}
        ) as resp:
            found: list[float] = await resp.json()
            return found

    async def reset(self) -> None:
        async with self.http.post(f"{self.control}/reset") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        await self.http.close()


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
            [sys.executable, "-m", "benchmarks.toolkit", "endpoints", str(out)],
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

    def notifier(self, role: str, *args: str, db: int = 0) -> Proc:
        """`notifier <role> <args>` on database `db`, stopped by the next `fresh`."""
        proc = self.spawn(
            " ".join((role, *args)),
            [sys.executable, "-m", "notifier", role, *args],
            env=self.env(db),
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
        self, types: Sequence[str], rate: float, seconds: float, first: int = 0
    ) -> int:
        """Publish at `rate` events/s for `seconds`, each XADDed when due (not in bursts);
        returns how many."""
        redis = self.client()
        started = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) + 1 - sent
            if due > 0:
                async with redis.pipeline(transaction=False) as pipe:
                    for i in range(first + sent, first + sent + due):
                        pipe.xadd(
                            INGRESS,
                            {"type": types[i % len(types)], "data": DATA % (i, time.time())},
                        )
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


def cpu_text(cpu: Cpu, names: Iterable[str]) -> str:
    """`deliver 98%, router 31%, redis 40%, others 3%` (% of one core)."""
    parts = [f"{name} {cpu.percent(name):.0f}%" for name in names]
    return ", ".join([*parts, f"others {cpu.others:.0f}%"])


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


def run_fast(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run on uvloop when it is installed, as `notifier.cli` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    if sys.argv[1:2] != ["endpoints"] or len(sys.argv) != 3:
        sys.exit("usage: python -m benchmarks.toolkit endpoints OUT_FILE")
    run_fast(serve_endpoints(Path(sys.argv[2])))
