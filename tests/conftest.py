"""Shared fixtures: a real redis-server on a free port, partner endpoints on loopback, and
notifier's parts running in this process or as real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier import config, service
from notifier.config import Settings

TOKEN = "test-admin-token"
BASE_ENV = {
    "NOTIFIER_ADMIN_TOKEN": TOKEN,
    "NOTIFIER_ALLOWED_NETWORKS": "127.0.0.0/8",
    "NOTIFIER_ALLOW_HTTP": "1",
    "NOTIFIER_RETRY_SCHEDULE": "200ms,400ms,600ms",
    "NOTIFIER_REQUEST_TIMEOUT": "2s",
    "NOTIFIER_CLAIM_IDLE": "60s",
    "NOTIFIER_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0,
                     what: str = "condition") -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class RedisServer:
    """A redis-server of the test run's own, which tests may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.exit("redis-server is not installed (scripts/test installs it)", 2)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--maxmemory-policy", "noeviction", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self, sig: int = 15) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    if redis_server.proc is None:
        redis_server.start()
    client = Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    """The environment of a notifier under test; tests may change it before starting one."""
    return {**BASE_ENV, "REDIS_URL": redis_server.url}


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    return config.load(env)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def ok(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=200)


@dataclass
class Endpoint:
    """A partner endpoint on loopback that records every request it receives."""

    responder: Responder = ok
    received: list[Received] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body,
                                      time.monotonic()))
        return await self.responder(request, len(self.received))

    async def start(self) -> Endpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        await eventually(lambda: len(self.received) >= count, timeout,
                         f"{count} requests at {self.url} (got {len(self.received)})")

    def bodies(self) -> list[Any]:
        import json
        return [json.loads(r.body) for r in self.received]


@pytest.fixture
async def endpoint_factory() -> AsyncIterator[Callable[..., Awaitable[Endpoint]]]:
    started: list[Endpoint] = []

    async def make(responder: Responder = ok) -> Endpoint:
        endpoint = await Endpoint(responder).start()
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        assert endpoint.runner is not None
        await endpoint.runner.cleanup()


@contextlib.asynccontextmanager
async def running(settings: Settings, *, route: bool = True, deliver: bool = True,
                  serve_api: bool = False) -> AsyncIterator[asyncio.Event]:
    """notifier's parts in this process, stopped (gracefully) on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(settings, route=route, deliver=deliver,
                                           serve_api=serve_api, stop=stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `notifier <command>` as a real subprocess; all are killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc_env = {**os.environ, **env, **(extra or {})}
        proc = subprocess.Popen([sys.executable, "-m", "notifier.cli", *args], env=proc_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


async def register(redis: Redis, settings: Settings, name: str, url: str,
                   events: list[str], **extra: Any) -> tuple[str, str]:
    """Register a partner through the store; returns (id, secret)."""
    import msgspec

    from notifier.models import PartnerIn
    from notifier.store import Store

    body = msgspec.convert({"name": name, "url": url, "events": events, **extra}, PartnerIn)
    partner, secret = await Store(redis, settings).create(body)
    return partner.id, secret


async def publish(redis: Redis, event_type: str, data: dict[str, Any] | str,
                  event_id: str | None = None, stream: str = "notifier:events") -> str:
    import json
    fields: dict[str, Any] = {"type": event_type,
                              "data": data if isinstance(data, str) else json.dumps(data)}
    if event_id:
        fields["id"] = event_id
    entry: bytes = await redis.xadd(stream, fields)
    return entry.decode()


async def idle(redis: Redis, timeout: float = 20.0) -> None:
    """Wait until every event is routed and every partner stream is empty."""
    async def settled() -> bool:
        if await redis.xlen("notifier:events"):
            return False
        for key in await redis.keys("notifier:{*}:stream"):
            if await redis.xlen(key):
                return False
        return True
    await eventually(settled, timeout, "notifier to finish its work")
