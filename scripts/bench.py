"""Benchmark notifier on this machine and print one table of figures.

Everything runs for real: a redis-server of the bench's own on a free port (in a temp dir, no
persistence), the partner endpoints as aiohttp servers in a separate process (so they do not
take the notifier's CPU), and `python -m notifier.cli router` / `... deliver` as subprocesses.
Partners are registered through `notifier.store.Store`, events are XADDed to the ingress
stream like any producer does, and deliveries are counted where they land: at the endpoints.

Scenarios (each wait bounded by --timeout; the whole run takes about three minutes on 2 cores):

 1. end to end: --events events x --partners partners subscribed to `*`, router + one delivery
    process, endpoints answering 200 at once; first XADD to last delivery received. Beside it a
    bare aiohttp client (one ClientSession, partners x max_in_flight concurrent requests)
    POSTing as many similar bodies to the same endpoints, and the ratio of the two.
 2. isolation from an outage: one healthy partner's throughput alone, then beside an outage
    partner (500s, or a refused port with --outage refused) holding a --backlog of messages.
 3. isolation from slow partners: the healthy partner beside a rate-limited partner (--rate,
    --backlog messages) and a partner whose endpoint hangs for 10 s (the default
    NOTIFIER_REQUEST_TIMEOUT); and the rate-limited partner's achieved rate vs its limit.
 4. horizontal scale: scenario 1 with two delivery processes instead of one.

The machine is shared with whatever else runs on it, so measurements that are compared are
taken side by side and repeated (scenarios 1 and 4: --e2e-repeat rounds; 2 and 3: --repeat
alone/beside pairs), ratios are medians of the pairs' ratios, and every CPU line shows the load
of other processes. CPU time per delivery is the figure least moved by such load.

Internal modes (used by the bench itself): `bench.py _endpoints ...`, `bench.py _bare ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # notifier from this checkout, also without `pip install -e`
INGRESS = "notifier:events"
HANG_SECONDS = 10.0
POLL = 0.05
PUBLISH_BATCH = 500
ENDPOINT_PORTS = 12
#: A realistic order event, about 300 bytes of JSON once filled in.
DATA = ('{"order_id": %d, "customer": {"id": "cus_7Hq2LmX9", "email": "jane@example.com"}, '
        '"total": 129.95, "currency": "EUR", "items": [{"sku": "SKU-10442", "qty": 2, '
        '"price": 39.99}, {"sku": "SKU-20918", "qty": 1, "price": 49.97}], '
        '"shipping": {"method": "express", "country": "DE"}, "created_at": '
        '"2026-11-24T12:00:00Z"}')


class BenchError(RuntimeError):
    pass


class WaitTimeout(BenchError):
    def __init__(self, what: str, got: int, want: int, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:.0f}s waiting for {what}: {got}/{want}")
        self.got, self.want, self.seconds = got, want, seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """preexec_fn: a child is killed if the bench dies without cleaning up (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_fast(coro: Coroutine[Any, Any, Any]) -> Any:
    """asyncio.run on uvloop when it is installed, as `notifier.cli` does."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine so far, all cores (Linux /proc/stat)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal (guest is inside user already)
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by each named process over a measurement, in % of one core, and the load of
    everything else on the machine (another test run there skews every figure)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench": os.getpid()}
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine = machine_busy_seconds()
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.started, 1e-6)
        self.seconds = {name: cpu_seconds(pid) - self.before[name]
                        for name, pid in self.pids.items()}
        used = {name: seconds / wall * 100 for name, seconds in self.seconds.items()}
        machine = (machine_busy_seconds() - self.machine) / wall * 100
        used["other processes"] = max(0.0, machine - sum(used.values()))
        return used


# --------------------------------------------------------------------------------------------
# the endpoint process: partner endpoints on loopback that count (and time) what they receive


async def serve_endpoints(out: Path, nports: int, hang: float) -> None:
    from aiohttp import web

    arrivals: dict[str, list[float]] = defaultdict(list)

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        arrivals[request.match_info["key"]].append(time.time())
        kind = request.match_info["kind"]
        if kind == "fail":
            return web.Response(status=500, text="outage")
        if kind == "hang":
            await asyncio.sleep(hang)
        return web.Response(status=200)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({k: [len(v), v[-1] if v else 0.0] for k, v in arrivals.items()})

    async def window(request: web.Request) -> web.Response:
        """Requests of `key` that arrived in [since, until], the most in any `span` s, and
        their rate with the edges smoothed over `span` (see `smoothed_rate`)."""
        query = request.query
        times = arrivals.get(query["key"], [])
        since, until = float(query["since"]), float(query["until"])
        span = float(query.get("span", "1"))
        inside = times[bisect.bisect_left(times, since):bisect.bisect_right(times, until)]
        best = low = 0
        for high, at in enumerate(inside):
            while at - inside[low] >= span:
                low += 1
            best = max(best, high - low + 1)
        return web.json_response({"count": len(inside), "max_per_span": best,
                                  "rate": smoothed_rate(times, since, until, span)})

    async def reset(request: web.Request) -> web.Response:
        arrivals.clear()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook/{kind}/{key}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/window", window)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(nports):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock, backlog=1024).start()
        ports.append(sock.getsockname()[1])
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps({"ports": ports}))
    partial.rename(out)  # atomic: the bench never reads half a file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def smoothed_rate(times: list[float], since: float, until: float,
                  span: float) -> float | None:
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
        return statistics.fmean(bisect.bisect_right(times, start + span * (k + 0.5) / steps)
                                 for k in range(steps))

    return (level(until - span) - level(since)) / (until - span - since)


# --------------------------------------------------------------------------------------------
# the bare client process: what plain aiohttp achieves against the same endpoints


def webhook_like(index: int) -> tuple[bytes, dict[str, str]]:
    """A body and headers shaped and sized like notifier's (no real signature)."""
    body = ('{"type":"order.created","timestamp":"2026-11-24T12:00:00.000Z","data":'
            + DATA % index + "}").encode()
    headers = {"content-type": "application/json", "user-agent": "notifier/0.1.0",
               "webhook-id": f"msg_1764000000000-{index}", "webhook-timestamp": "1764000000",
               "webhook-signature": "v1," + "A" * 43 + "="}
    return body, headers


async def bare_client(urls: list[str], per_url: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    body, headers = webhook_like(1)
    remaining = dict.fromkeys(urls, per_url)
    errors = 0
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=10),
            skip_auto_headers=("User-Agent", "Accept-Encoding"), auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def post(url: str) -> None:
            nonlocal errors
            try:
                async with session.post(url, data=body, headers=headers,
                                        allow_redirects=False) as resp:
                    await resp.read()
                    errors += resp.status != 200
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        async def worker(url: str) -> None:
            while remaining[url] > 0:
                remaining[url] -= 1
                await post(url)

        for url in urls:  # one warm connection per endpoint, as notifier gets from its warm-up
            await post(url)
        started, cpu = time.time(), time.process_time()
        await asyncio.gather(*(worker(u) for u in urls for _ in range(concurrency)))
        ended, cpu = time.time(), time.process_time() - cpu
    return {"started": started, "ended": ended, "sent": per_url * len(urls), "errors": errors,
            "cpu_seconds": cpu}


# --------------------------------------------------------------------------------------------
# the bench: processes, partners, publishing, counting


@dataclass
class Extra:
    """A partner beside the healthy one in scenarios 2 and 3."""

    key: str
    kind: str  # ok | fail | hang | refused
    backlog: int
    options: dict[str, Any] = field(default_factory=dict)

    def span(self) -> float:
        """The window of its rate limit in seconds (1 without one)."""
        from notifier.ratelimit import parse_rate
        rate = parse_rate(self.options.get("rate_limit"))
        return rate.window_ms / 1000 if rate else 1.0


@dataclass
class Row:
    scenario: str
    figure: str
    value: str
    goal: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="notifier-bench-"))
        self.procs: dict[subprocess.Popen[bytes], str] = {}
        self.notifier_procs: list[subprocess.Popen[bytes]] = []
        self.redis_proc: subprocess.Popen[bytes] | None = None
        self.endpoint_proc: subprocess.Popen[bytes] | None = None
        self.redis_url = ""
        self.redis: Any = None
        self.http: Any = None
        self.ports: list[int] = []
        self.control = ""
        self.env: dict[str, str] = {}
        self.rows: list[Row] = []
        self.notes: dict[str, str] = {}
        self._spawned = 0
        self.code_at_start = code_version()

    # processes

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              stdout: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        self._spawned += 1
        log = self.tmp / f"{self._spawned:02d}-{name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=stdout, stderr=err,
                                    preexec_fn=die_with_parent)
        self.procs[proc] = str(log)
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        try:
            text = Path(self.procs[proc]).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc, grace=2.0)

    def check_alive(self) -> None:
        for proc in [*self.notifier_procs, self.redis_proc, self.endpoint_proc]:
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"{Path(self.procs[proc]).stem} exited with {proc.returncode}:"
                                 f"\n{self.log_tail(proc)}")

    async def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (scripts/setup installs it)")
        port = free_port()
        self.redis_proc = self.spawn("redis", [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.tmp),
            "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
            "--loglevel", "warning"])
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        from redis.asyncio import Redis
        self.redis = Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(Exception):
                if await self.redis.ping():
                    break
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("redis-server did not answer PING within 10s")
            await asyncio.sleep(POLL)
        self.env = {**os.environ, "REDIS_URL": self.redis_url,
                    "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8", "NOTIFIER_ALLOW_HTTP": "1",
                    "NOTIFIER_ADMIN_TOKEN": "bench-admin-token", "NOTIFIER_LOG_LEVEL": "warning",
                    "PYTHONUNBUFFERED": "1"}

    async def start_endpoints(self) -> None:
        import aiohttp
        out = self.tmp / "endpoints.json"
        self.endpoint_proc = self.spawn("endpoints", [
            sys.executable, __file__, "_endpoints", "--out", str(out),
            "--ports", str(ENDPOINT_PORTS), "--hang", str(HANG_SECONDS)])
        deadline = time.monotonic() + 20
        while not out.exists():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError("the endpoint process did not start within 20s")
            await asyncio.sleep(POLL)
        self.ports = json.loads(out.read_text())["ports"]
        self.control = f"http://127.0.0.1:{self.ports[0]}"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    def pids(self, **notifier: subprocess.Popen[bytes]) -> dict[str, int]:
        """What a CpuMeter watches: the given notifier processes, Redis and the endpoints."""
        pids = {name: proc.pid for name, proc in notifier.items()}
        for name, proc in (("redis", self.redis_proc), ("endpoints", self.endpoint_proc)):
            if proc is not None:
                pids[name] = proc.pid
        return pids

    def start_notifier(self, role: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(role, [sys.executable, "-m", "notifier.cli", role], env=self.env)
        self.notifier_procs.append(proc)
        return proc

    async def fresh(self) -> None:
        """Between scenarios: no notifier process, an empty Redis, zeroed endpoint counts."""
        for proc in self.notifier_procs:
            self.stop(proc, grace=0.5)  # a graceful stop would wait for the hanging requests
        self.notifier_procs.clear()
        await self.redis.flushall()
        async with self.http.post(f"{self.control}/reset") as resp:
            resp.raise_for_status()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    # partners and events

    def url(self, kind: str, key: str, index: int) -> str:
        if kind == "refused":
            return f"http://127.0.0.1:{free_port()}/hook/fail/{key}"  # nothing listens there
        return f"http://127.0.0.1:{self.ports[index % len(self.ports)]}/hook/{kind}/{key}"

    async def register(self, key: str, url: str, events: list[str], **options: Any) -> str:
        import msgspec

        from notifier import config
        from notifier.models import PartnerIn
        from notifier.store import Store

        body = msgspec.convert({"name": key, "url": url, "events": events, **options}, PartnerIn)
        partner, _ = await Store(self.redis, config.load(self.env)).create(body)
        return partner.id

    async def publish(self, event_type: str, count: int) -> None:
        for start in range(0, count, PUBLISH_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(count, start + PUBLISH_BATCH)):
                    pipe.xadd(INGRESS, {"type": event_type, "data": DATA % i})
                await pipe.execute()

    # counting at the endpoints

    async def stats(self) -> dict[str, tuple[int, float]]:
        async with self.http.get(f"{self.control}/stats") as resp:
            return {k: (int(v[0]), float(v[1])) for k, v in (await resp.json()).items()}

    async def window(self, key: str, since: float, until: float,
                     span: float = 1.0) -> dict[str, Any]:
        params = {"key": key, "since": repr(since), "until": repr(until), "span": repr(span)}
        async with self.http.get(f"{self.control}/window", params=params) as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def wait_counts(self, want: dict[str, int], timeout: float, what: str) -> float:
        """Wait until every endpoint `key` has received `want[key]` requests; returns the
        arrival time of the last of them (the endpoint's clock, time.time())."""
        started = time.monotonic()
        while True:
            stats = await self.stats()
            got = {k: stats.get(k, (0, 0.0)) for k in want}
            if all(got[k][0] >= n for k, n in want.items()):
                return max(got[k][1] for k in want)
            self.check_alive()
            if time.monotonic() - started > timeout:
                raise WaitTimeout(what, sum(min(got[k][0], n) for k, n in want.items()),
                                  sum(want.values()), timeout)
            await asyncio.sleep(POLL)

    async def wait_routed(self, streams: dict[str, int], timeout: float) -> None:
        """Wait until the router has emptied the ingress stream into the partner streams."""
        from notifier import keys
        started = time.monotonic()
        while True:
            lengths = {pid: await self.redis.xlen(keys.stream(pid)) for pid in streams}
            if await self.redis.xlen(INGRESS) == 0 and all(
                    lengths[pid] >= n for pid, n in streams.items()):
                return
            self.check_alive()
            if time.monotonic() - started > timeout:
                raise WaitTimeout("the router to fill the backlog",
                                  sum(lengths.values()), sum(streams.values()), timeout)
            await asyncio.sleep(POLL)

    # profiling (optional)

    def profile_start(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        if not self.args.profile:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            self.notes["py-spy"] = "--profile: py-spy not found (.venv/bin/pip install py-spy)"
            return None
        out = Path(self.args.profile) / f"{name}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        return self.spawn("py-spy", [spy, "record", "--pid", str(pid), "--rate", "250",
                                     "--format", "raw", "--nonblocking", "--output", str(out)])

    def profile_stop(self, spy: subprocess.Popen[bytes] | None, name: str) -> None:
        if spy is None:
            return
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()
        out = Path(self.args.profile) / f"{name}.txt"
        if out.exists():
            self.notes[name] = f"profile of {name} (last run): {out}\n" + profile_summary(out)
        else:
            self.notes[name] = f"profile of {name} failed:\n{self.log_tail(spy)}"

    # scenarios

    async def end_to_end(self, delivers: int) -> dict[str, Any]:
        """Scenario 1 (and 4): events x partners through router + `delivers` processes."""
        args = self.args
        await self.fresh()
        names = [f"e2e{delivers}-{i}" for i in range(args.partners)]
        for i, key in enumerate(names):
            await self.register(key, self.url("ok", key, i), ["*"],
                                max_in_flight=args.max_in_flight)
        router = self.start_notifier("router")
        workers = [self.start_notifier("deliver") for _ in range(delivers)]
        warm = 2 * delivers
        await self.publish("bench.warmup", warm)
        await self.wait_counts(dict.fromkeys(names, warm), args.timeout,
                               "the warm-up deliveries (are router and deliver up?)")
        meter = CpuMeter(self.pids(router=router, **{f"deliver{i + 1}": p
                                                       for i, p in enumerate(workers)}))
        await self.redis.config_resetstat()
        spy = self.profile_start(workers[0].pid, f"deliver-e2e-{delivers}")
        total = args.events * args.partners
        started = time.time()
        try:
            await self.publish("order.created", args.events)
            last = await self.wait_counts(dict.fromkeys(names, warm + args.events),
                                          args.timeout, "the deliveries")
        except WaitTimeout as exc:
            return {"timeout": exc, "delivered": exc.got, "total": total}
        finally:
            cpu = meter.read()
            cpu_used = meter.seconds
            self.profile_stop(spy, f"deliver-e2e-{delivers}")
        elapsed = last - started
        await asyncio.sleep(0.3)
        commands = await self.redis.info("commandstats")
        stats = await self.stats()
        extra = sum(stats[k][0] for k in names) - len(names) * (warm + args.events)
        return {"rate": total / elapsed, "elapsed": elapsed, "total": total, "cpu": cpu,
                "duplicates": extra, "commands": commands,
                "us_per_delivery": {name: seconds / total * 1e6
                                    for name, seconds in cpu_used.items()}}

    async def bare(self) -> dict[str, Any]:
        """Scenario 1's baseline: plain aiohttp against the same endpoints."""
        args = self.args
        await self.fresh()
        urls = [self.url("ok", f"bare-{i}", i) for i in range(args.partners)]
        argv = [sys.executable, __file__, "_bare", "--per-url", str(args.events),
                "--concurrency", str(args.max_in_flight), *urls]
        proc = self.spawn("bare-client", argv, stdout=subprocess.PIPE)
        pids = {"bare client": proc.pid}
        if self.endpoint_proc is not None:
            pids["endpoints"] = self.endpoint_proc.pid
        meter = CpuMeter(pids)
        started = time.monotonic()
        cpu: dict[str, float] = {}
        while proc.poll() is None:
            cpu = meter.read()  # the last reading before the client exits
            self.check_alive()
            if time.monotonic() - started > args.timeout:
                self.stop(proc)
                raise BenchError(f"the bare client did not finish within {args.timeout:.0f}s")
            await asyncio.sleep(POLL)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        if proc.returncode != 0:
            raise BenchError(f"the bare client failed:\n{self.log_tail(proc)}")
        result: dict[str, Any] = json.loads(out)
        elapsed = result["ended"] - result["started"]
        result["elapsed"] = elapsed
        result["rate"] = result["sent"] / elapsed
        cpu.pop("bench", None)
        result["cpu"] = cpu
        return result

    async def healthy(self, label: str, extras: list[Extra]) -> dict[str, Any]:
        """Scenarios 2 and 3: one healthy partner's throughput, beside `extras` (or alone)."""
        args = self.args
        await self.fresh()
        key = f"{label}-healthy"
        await self.register(key, self.url("ok", key, 0), ["bench.healthy"],
                            max_in_flight=args.max_in_flight)
        ids = {}
        for i, extra in enumerate(extras, start=1):
            ids[extra.key] = await self.register(
                extra.key, self.url(extra.kind, extra.key, i), [f"bench.{extra.key}"],
                **extra.options)
        router = self.start_notifier("router")
        for extra in extras:
            await self.publish(f"bench.{extra.key}", extra.backlog)
        if extras:
            await self.wait_routed({ids[e.key]: e.backlog for e in extras}, args.timeout)
        deliver = self.start_notifier("deliver")
        warm = 10
        await self.publish("bench.healthy", warm)
        await self.wait_counts({key: warm}, args.timeout,
                               "the healthy partner's warm-up (is deliver up?)")
        await asyncio.sleep(1.0)  # the other partners' load is under way
        spy = self.profile_start(deliver.pid, f"deliver-{label}")
        meter = CpuMeter(self.pids(deliver=deliver, router=router))
        result: dict[str, Any] = {"total": args.healthy_events}
        started = time.time()
        try:
            await self.publish("bench.healthy", args.healthy_events)
            last = await self.wait_counts({key: warm + args.healthy_events}, args.timeout,
                                          "the healthy partner's deliveries")
            result.update(rate=args.healthy_events / (last - started), elapsed=last - started)
        except WaitTimeout as exc:
            last = time.time()
            result.update(timeout=exc)
        finally:
            self.profile_stop(spy, f"deliver-{label}")
        result["cpu"] = meter.read()
        # what the others received while the healthy partner was measured, and over at least
        # --window seconds from the first healthy XADD (a rate limit needs a longer look)
        result["during"] = {e.key: {**await self.window(e.key, started, last),
                                    "seconds": last - started} for e in extras}
        until = max(last, started + args.window)
        await asyncio.sleep(max(0.0, until - time.time()) + 0.1)
        result["others"] = {e.key: {**await self.window(e.key, started, until, e.span()),
                                    "seconds": until - started} for e in extras}
        stats = await self.stats()
        result["received"] = {e.key: stats.get(e.key, (0, 0.0))[0] for e in extras}
        return result

    async def isolation(self, label: str, extras: list[Extra],
                        report: Callable[[list[Any], list[Any]], None]) -> None:
        """Alone and beside `extras`, interleaved --repeat times: pairs close in time cancel
        most of the drift of a shared machine."""
        alone, beside = [], []
        for _ in range(self.args.repeat):
            alone.append(await self.healthy(f"{label}-alone", []))
            beside.append(await self.healthy(label, extras))
        report(alone, beside)

    async def run(self) -> None:
        args = self.args
        await self.start_redis()
        await self.start_endpoints()
        only = set(args.only)
        if only & {1, 4}:
            await self.guarded("1 end to end" if 1 in only else "4 horizontal scale",
                               self.scenarios_1_4(only))
        if 2 in only:
            progress(f"scenario 2: healthy partner alone / beside an outage partner "
                     f"({args.backlog} pending), {args.repeat} pairs")
            outage = Extra("s2-outage", "refused" if args.outage == "refused" else "fail",
                           args.backlog)
            await self.guarded("2 isolation from an outage", self.isolation(
                "s2", [outage], self.report_outage))
        if 3 in only:
            progress(f"scenario 3: healthy partner alone / beside a {args.rate} partner "
                     f"({args.backlog} backlog) and a hanging partner ({args.hang_backlog} "
                     f"backlog), {args.repeat} pairs")
            limited = Extra("s3-limited", "ok", args.backlog,
                            {"rate_limit": args.rate, "max_in_flight": args.max_in_flight})
            hanging = Extra("s3-hanging", "hang", args.hang_backlog,
                            {"max_in_flight": args.max_in_flight})
            await self.guarded("3 isolation from slow partners", self.isolation(
                "s3", [limited, hanging], self.report_slow))

    async def guarded(self, scenario: str, work: Coroutine[Any, Any, None]) -> None:
        """Run one scenario; a failure is a row of the table, and the next scenario runs."""
        try:
            await work
        except BenchError as exc:
            progress(f"{scenario}: FAILED: {exc}")
            self.add(scenario, "FAILED", str(exc).splitlines()[0][:150])
            self.notes[f"failure-{scenario}"] = f"{scenario} failed:\n{exc}"

    async def scenarios_1_4(self, only: set[int]) -> None:
        args = self.args
        one: list[Any] = []
        bare: list[Any] = []
        two: list[Any] = []
        for round_ in range(1, args.e2e_repeat + 1):
            of = f" (round {round_}/{args.e2e_repeat})"
            progress(f"scenario 1: {args.events} events x {args.partners} partners, "
                     f"router + 1 deliver{of}")
            one.append(await self.end_to_end(1))
            if 1 in only:
                progress(f"scenario 1: bare aiohttp client{of}")
                bare.append(await self.bare())
            if 4 in only:
                progress(f"scenario 4: router + 2 deliver{of}")
                two.append(await self.end_to_end(2))
        if 1 in only:
            self.report_e2e(one, bare)
        if 4 in only:
            self.report_scale(one, two)

    # reporting

    def add(self, scenario: str, figure: str, value: str, goal: str = "") -> None:
        self.rows.append(Row(scenario, figure, value, goal))

    def report_e2e(self, one: list[Any], bare: list[Any]) -> None:
        s = f"1 end to end ({self.args.events:,} events x {self.args.partners} partners)"
        self.add(s, "notifier: router + 1 deliver", rates_text(one, "deliveries/s"))
        self.add(s, "bare aiohttp client", rates_text(bare, "requests/s") +
                 f", {sum(r['errors'] for r in bare)} errors")
        self.add(s, "ratio notifier / bare", ratio_text(one, bare), ">= 0.5 (product 0.7)")
        done = [r for r in one if "rate" in r]
        if done:
            self.add(s, "CPU, notifier run (% of a core)", cpu_text(mean_cpu(done)))
            self.add(s, "Redis work per delivery", redis_text(done[-1]["commands"],
                                                              done[-1]["total"]))
            per = {name: statistics.median(r["us_per_delivery"][name] for r in done)
                   for name in ("deliver1", "router", "redis")}
            text = ", ".join(f"{name} {us:,.0f} us" for name, us in per.items())
            if bare:
                client = statistics.median(r["cpu_seconds"] / r["sent"] * 1e6 for r in bare)
                text += (f"; bare client {client:,.0f} us per request "
                         f"(CPU ratio {client / per['deliver1']:.2f})")
            self.add(s, "CPU time per delivery", text)
            duplicates = sum(r["duplicates"] for r in done)
            if duplicates:
                self.add(s, "extra deliveries (duplicates)", f"{duplicates:,}", "0")
        self.add(s, "CPU, bare run (% of a core)", cpu_text(mean_cpu(bare)))

    def report_outage(self, alone: list[Any], beside: list[Any]) -> None:
        s = "2 isolation from an outage"
        what = "refused port" if self.args.outage == "refused" else "HTTP 500"
        self.add(s, "healthy partner alone", rates_text(alone, "deliveries/s"))
        self.add(s, f"healthy beside outage ({what}, {self.args.backlog:,} pending)",
                 rates_text(beside, "deliveries/s"))
        self.add(s, "ratio beside / alone", ratio_text(beside, alone))
        if self.args.outage != "refused":
            during = [r["during"]["s2-outage"] for r in beside]
            rate = statistics.median(d["count"] / d["seconds"] for d in during)
            self.add(s, "outage partner attempts meanwhile", f"{rate:,.0f} requests/s")
        self.add(s, "CPU alone (% of a core)", cpu_text(mean_cpu(alone)))
        self.add(s, "CPU beside", cpu_text(mean_cpu(beside)))

    def report_slow(self, alone: list[Any], beside: list[Any]) -> None:
        from notifier.ratelimit import parse_rate
        s = "3 isolation from slow partners"
        self.add(s, "healthy partner alone", rates_text(alone, "deliveries/s"))
        self.add(s, f"healthy beside {self.args.rate} + hanging partner",
                 rates_text(beside, "deliveries/s"))
        self.add(s, "ratio beside / alone", ratio_text(beside, alone), ">= 0.9")
        rate = parse_rate(self.args.rate)
        assert rate is not None
        per_second = rate.limit * 1000 / rate.window_ms
        limited = [r["others"]["s3-limited"] for r in beside]
        achieved = [w["rate"] or w["count"] / w["seconds"] for w in limited]
        seconds = sum(w["seconds"] for w in limited)
        spread = (f", {min(achieved) / per_second:.1%}-{max(achieved) / per_second:.1%}"
                  if len(achieved) > 1 else "")
        self.add(s, "rate-limited partner's rate",
                 f"{statistics.median(achieved):.1f} requests/s of {per_second:g}/s = "
                 f"{statistics.median(achieved) / per_second:.1%} utilisation (median over "
                 f"{len(achieved)} x {seconds / len(achieved):.0f} s{spread})",
                 ">= 95%")
        self.add(s, f"rate-limited: most requests in any {rate.window_ms / 1000:g} s",
                 f"{max(w['max_per_span'] for w in limited)}", f"<= {rate.limit}")
        hanging = [r["received"]["s3-hanging"] for r in beside]
        self.add(s, "hanging partner: requests received",
                 f"{statistics.median(hanging):.0f} per run (each hangs {HANG_SECONDS:g} s)")
        self.add(s, "CPU alone (% of a core)", cpu_text(mean_cpu(alone)))
        self.add(s, "CPU beside", cpu_text(mean_cpu(beside)))

    def report_scale(self, one: list[Any], two: list[Any]) -> None:
        s = "4 horizontal scale (scenario 1 setup)"
        self.add(s, "router + 1 deliver", rates_text(one, "deliveries/s"))
        self.add(s, "router + 2 deliver", rates_text(two, "deliveries/s"))
        self.add(s, "ratio 2 / 1", ratio_text(two, one),
                 f"(nproc={os.cpu_count()} shared by all processes)")
        done = [r for r in two if "rate" in r]
        if done:
            self.add(s, "CPU, 2-deliver run (% of a core)", cpu_text(mean_cpu(done)))

    def print_table(self) -> None:
        for note in self.notes.values():
            print(f"\n{note}")
        print()
        print(machine_line())
        print(f"code: {self.code_at_start}")
        if code_version() != self.code_at_start:
            print(f"WARNING: the code changed during the run, now: {code_version()}")
        a = self.args
        print(f"settings: --events {a.events} --partners {a.partners} --max-in-flight "
              f"{a.max_in_flight} --healthy-events {a.healthy_events} --repeat {a.repeat} "
              f"--e2e-repeat {a.e2e_repeat} "
              f"--backlog {a.backlog} --hang-backlog {a.hang_backlog} --rate '{a.rate}' "
              f"--outage {a.outage} --window {a.window:g}")
        width = [min(cap, max(len(getattr(r, f)) for r in self.rows))
                 for f, cap in (("figure", 48), ("value", 56))]
        last = ""
        for row in self.rows:
            if row.scenario != last:
                print(f"\n{row.scenario}")
                last = row.scenario
            goal = f"  goal {row.goal}" if row.goal and not row.goal.startswith("(") else \
                f"  {row.goal}" if row.goal else ""
            print(f"  {row.figure:<{width[0]}}  {row.value:<{width[1]}}{goal}".rstrip())


def rates_text(results: list[dict[str, Any]], unit: str) -> str:
    """The median rate of several runs of one measurement, its spread, and their size."""
    if not results:
        return "not run"
    timeouts = [r["timeout"] for r in results if "timeout" in r]
    if timeouts:
        exc: WaitTimeout = timeouts[0]
        return (f"TIMEOUT in {len(timeouts)} of {len(results)} runs: {exc.got:,}/{exc.want:,} "
                f"in {exc.seconds:.0f} s (~{exc.got / exc.seconds:,.0f} {unit})")
    rates = [r["rate"] for r in results]
    size = results[0].get("total") or results[0].get("sent") or 0
    if len(rates) == 1:
        return f"{rates[0]:,.0f} {unit} ({size:,} in {results[0]['elapsed']:.2f} s)"
    return (f"{statistics.median(rates):,.0f} {unit} (median of {len(rates)} runs of "
            f"{size:,}: {min(rates):,.0f}-{max(rates):,.0f})")


def ratio_text(top: list[dict[str, Any]], bottom: list[dict[str, Any]]) -> str:
    """The median of the ratios of runs taken side by side (same round or pair)."""
    ratios = [a["rate"] / b["rate"] for a, b in zip(top, bottom, strict=False)
              if "rate" in a and "rate" in b]
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return (f"{statistics.median(ratios):.2f} (median of {len(ratios)} pairs: "
            f"{min(ratios):.2f}-{max(ratios):.2f})")


def mean_cpu(results: list[dict[str, Any]]) -> dict[str, float]:
    names = [name for name in results[0]["cpu"]] if results else []
    return {name: statistics.fmean(r["cpu"].get(name, 0.0) for r in results) for name in names}


def redis_text(commands: dict[str, Any], deliveries: int) -> str:
    """Commands (also those run inside scripts), round trips and Redis CPU per delivery."""
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commands.items()}
    usec = sum(float(v["usec"]) for v in commands.values())
    scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
    per = f"{sum(calls.values()) / deliveries:.1f} commands ({scripts / deliveries:.2f} scripts"
    per += f", {calls.get('exec', 0) / deliveries:.2f} MULTI/EXEC"
    top = sorted(((n, c) for n, c in calls.items() if n not in ("evalsha", "eval", "exec",
                                                                 "multi")),
                 key=lambda nc: -nc[1])[:4]
    per += "".join(f", {c / deliveries:.2f} {n.upper()}" for n, c in top)
    return per + f"), {usec / deliveries:.1f} us Redis CPU"


def cpu_text(cpu: dict[str, float]) -> str:
    """% of one core per process; `bench` (this process) is left out unless it is busy."""
    return ", ".join(f"{name} {pct:.0f}%" for name, pct in cpu.items()
                     if name != "bench" or pct >= 10)


#: Functions whose inclusive share of the deliver process's samples the profile summary shows.
HOT = ("Delivery._serve", "Delivery._take", "Delivery._settle", "Delivery.tick", "Sender.send",
       "render", "request_headers", "signature_header", "Telemetry.attempt",
       "ClientSession._request", "Pipeline.execute", "AsyncScript.__call__")


def profile_summary(path: Path) -> str:
    """Where the deliver process's samples went, from py-spy's raw (collapsed) output: by
    library of the innermost frame, and the inclusive share of notifier's hot functions."""
    leaf: dict[str, int] = defaultdict(int)
    inclusive: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        leaf[_library(frames[-1])] += n
        for name in {f.split(" (", 1)[0] for f in frames} & set(HOT):
            inclusive[name] += n
    if not total:
        return "  (no samples)"
    by_lib = sorted(leaf.items(), key=lambda kv: -kv[1])[:7]
    hot = sorted(inclusive.items(), key=lambda kv: -kv[1])
    return (f"  {total} samples; innermost frame in: "
            + ", ".join(f"{lib} {n / total:.0%}" for lib, n in by_lib)
            + "\n  inclusive: " + ", ".join(f"{name} {n / total:.0%}" for name, n in hot))


def _library(frame: str) -> str:
    """`f (aiohttp/client.py:12)` -> aiohttp; the event loop's own frame counts as idle."""
    if "(" not in frame:
        return "native/idle"
    name, _, where = frame.rpartition(" (")
    path = where.split(":", 1)[0]
    if name == "Runner.run":
        return "event loop (uvloop, incl. syscalls)"
    top = path.split("/", 1)[0]
    return top.removesuffix(".py") if top else "?"


def code_version() -> str:
    """The commit measured, and whether notifier's code differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        head = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", "notifier", "lua", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return head[:72] + (" + uncommitted changes in notifier/lua" if dirty else "")


def machine_line() -> str:
    redis_version = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True,
                             timeout=5).stdout
        redis_version = out.split("v=", 1)[1].split()[0]
    try:
        import uvloop
        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio loop"
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    return (f"machine: nproc={os.cpu_count()}{model}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, redis-server {redis_version}, {loop}")


def progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------


def scenarios(text: str) -> set[int]:
    try:
        chosen = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give scenario numbers like 1,3") from None
    if not chosen or not chosen <= {1, 2, 3, 4}:
        raise argparse.ArgumentTypeError(f"{text!r}: scenarios are 1, 2, 3 and 4")
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    top = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--events", type=int, default=2000,
                     help="scenarios 1 and 4: events published (default 2000)")
    top.add_argument("--partners", type=int, default=10,
                     help="scenarios 1 and 4: partners subscribed to * (default 10)")
    top.add_argument("--max-in-flight", type=int, default=10,
                     help="every partner's max_in_flight (default 10)")
    top.add_argument("--healthy-events", type=int, default=3000,
                     help="scenarios 2 and 3: messages to the healthy partner (default 3000)")
    top.add_argument("--repeat", type=int, default=3,
                     help="scenarios 2 and 3: alone/beside pairs to take the median of "
                          "(default 3)")
    top.add_argument("--e2e-repeat", type=int, default=2,
                     help="scenarios 1 and 4: rounds (1 deliver, bare, 2 deliver) to take the "
                          "median of (default 2)")
    top.add_argument("--backlog", type=int, default=10_000,
                     help="scenarios 2 and 3: outage / rate-limited backlog (default 10000)")
    top.add_argument("--hang-backlog", type=int, default=1000,
                     help="scenario 3: the hanging partner's backlog (default 1000)")
    top.add_argument("--rate", default="50/second", help="scenario 3: rate_limit")
    top.add_argument("--outage", choices=("500", "refused"), default="500",
                     help="scenario 2: the outage endpoint answers 500, or refuses connections")
    top.add_argument("--window", type=float, default=5.0,
                     help="scenario 3: least seconds the rate-limited rate is measured over")
    top.add_argument("--timeout", type=float, default=60.0,
                     help="seconds any one wait may take before the figure is a TIMEOUT")
    top.add_argument("--only", type=scenarios, default={1, 2, 3, 4},
                     help="scenarios to run, e.g. 1,4 (default all)")
    top.add_argument("--profile", metavar="DIR",
                     help="record the deliver process with py-spy into DIR (raw stacks) and "
                          "print where its CPU went")
    return top.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_endpoints":
        inner = argparse.ArgumentParser()
        inner.add_argument("--out", type=Path, required=True)
        inner.add_argument("--ports", type=int, required=True)
        inner.add_argument("--hang", type=float, required=True)
        ns = inner.parse_args(argv[1:])
        run_fast(serve_endpoints(ns.out, ns.ports, ns.hang))
        return 0
    if argv and argv[0] == "_bare":
        inner = argparse.ArgumentParser()
        inner.add_argument("--per-url", type=int, required=True)
        inner.add_argument("--concurrency", type=int, required=True)
        inner.add_argument("urls", nargs="+")
        ns = inner.parse_args(argv[1:])
        print(json.dumps(run_fast(bare_client(ns.urls, ns.per_url, ns.concurrency))))
        return 0

    args = parse_args(argv)
    bench = Bench(args)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like ^C
    started = time.monotonic()
    status = 0

    async def go() -> None:
        try:
            await bench.run()
        finally:
            await bench.close()

    try:
        asyncio.run(go())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        status = 1
    except Exception:
        traceback.print_exc()
        status = 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        status = 130
    finally:
        bench.stop_all()
        if status == 0:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        else:
            print(f"bench: logs of every process kept in {bench.tmp}", file=sys.stderr)
    if bench.rows:
        bench.print_table()
        print(f"\nbench took {time.monotonic() - started:.0f} s")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
