"""Parts for running notifier against real things on one machine: a private redis-server,
partner endpoints on loopback that record what they receive, and polling until a condition
holds. The test suite, the demo (`scripts/demo`) and the benchmarks (`scripts/bench`) share
this one copy, as aiohttp ships `aiohttp.test_utils`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from notifier.testing_tls import Certificates, ClientAuth


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; raise AssertionError naming `what` after `timeout` s."""
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
    """A redis-server of our own on a free loopback port, set up as production should be
    (AOF, noeviction), which may be stopped (or killed) and started again on the same data.

    `args` are more redis-server options; with `tls` (a `testing_tls.Certificates`) it serves
    TLS only, on its port, and `url` is `rediss://`."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        args: Sequence[str] = (),
        tls: Certificates | None = None,
        clients: ClientAuth = "yes",
    ) -> None:
        self.port = port or free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = list(args)
        self.tls = tls
        self.clients = clients
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            raise RuntimeError("redis-server is not installed (scripts/setup installs it)")
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = self.tls.server_args(self.port, self.clients)
        return [
            binary,
            *listen,
            *("--bind", "127.0.0.1", "--dir", str(self.dir)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            *("--maxmemory-policy", "noeviction", "--loglevel", "warning"),
            *self.args,
        ]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if answers_ping(self.port, self.tls):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self, sig: int = 15) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None


def answers_ping(port: int, tls: Certificates | None = None) -> bool:
    """Whether a Redis (or a sentinel) on loopback `port` answers PING now; over TLS with the
    client certificate of `tls`. An ACL that refuses the default user still answers."""
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            if tls is not None:
                context = ssl.create_default_context(cafile=str(tls.ca))
                context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
                sock = stack.enter_context(context.wrap_socket(sock, server_hostname="127.0.0.1"))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-NOPERM"))
    except OSError:
        return False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def ok(request: web.Request, n: int) -> web.StreamResponse:
    return web.Response(status=200)


@dataclass
class Capacity:
    """A responder for an endpoint that takes `per_second` requests in any second (sliding) and
    answers the rest with `status` (and `retry_after`, when given), or, with status 0, holds
    them `hang` seconds before answering 200 (past a sender's timeout). `answers` keeps when
    each request came (time.monotonic()) and what it was answered; `per_second` may change."""

    per_second: float
    status: int = 429
    retry_after: str | None = None
    hang: float = 30.0
    answers: list[tuple[float, int]] = field(default_factory=list)
    accepted: deque[float] = field(default_factory=deque)

    async def __call__(self, request: web.Request, n: int) -> web.StreamResponse:
        now = time.monotonic()
        while self.accepted and self.accepted[0] <= now - 1.0:
            self.accepted.popleft()
        if len(self.accepted) < self.per_second:
            self.accepted.append(now)
            self.answers.append((now, 200))
            return web.Response(status=200)
        self.answers.append((now, self.status))
        if not self.status:
            await asyncio.sleep(self.hang)
            return web.Response(status=200)
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return web.Response(status=self.status, headers=headers, text="over capacity")


@dataclass
class Endpoint:
    """A partner endpoint on loopback that records every request it receives and answers
    with `responder(request, n)`, n counting requests from 1."""

    responder: Responder = ok
    received: list[Received] = field(default_factory=list)
    url: str = ""
    runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body, time.monotonic()))
        return await self.responder(request, len(self.received))

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> Endpoint:
        """Listen on `host` (a free port by default); over HTTPS with `tls`."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if tls else 'http'}://{host}:{bound}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        await eventually(
            lambda: len(self.received) >= count,
            timeout,
            f"{count} requests at {self.url} (got {len(self.received)})",
        )

    def bodies(self) -> list[Any]:
        return [json.loads(r.body) for r in self.received]
