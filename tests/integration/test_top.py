"""`notifier top`, driven in a pseudo-terminal and read off a terminal emulator's screen, against
a split deployment: the rows show each partner's state and numbers, worst first."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys

import pyte
import pytest
from aiohttp import web
from redis.asyncio import Redis

from notifier.config import Settings
from notifier.testing import Capacity
from tests.helpers import Endpoint, EndpointFactory, Spawn, eventually, publish, register

pytestmark = pytest.mark.slow

COLUMNS, LINES = 140, 30


class Terminal:
    """`notifier top` on a pseudo-terminal, its output fed to a terminal emulator."""

    def __init__(self, env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLUMNS, LINES)
        self.stream = pyte.ByteStream(self.screen)
        leader, follower = pty.openpty()
        os.set_blocking(leader, False)
        self.leader = leader
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "notifier", "top", "--interval", "0.5"],
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
            env={
                **os.environ,
                **env,
                "COLUMNS": str(COLUMNS),
                "LINES": str(LINES),
                "TERM": "xterm-256color",
            },
        )
        os.close(follower)

    def pump(self) -> None:
        while select.select([self.leader], [], [], 0)[0]:
            try:
                chunk = os.read(self.leader, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.stream.feed(chunk)

    def text(self) -> str:
        self.pump()
        return "\n".join(self.screen.display)

    def lines(self) -> list[str]:
        """The screen's lines without the table's borders."""
        return [" ".join(line.replace("│", " ").split()) for line in self.screen.display]

    def row(self, name: str) -> str:
        return next((line for line in self.lines() if line.startswith(name + " ")), "")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(20)
        self.pump()
        os.close(self.leader)
        assert self.proc.stderr is not None
        with self.proc.stderr as err:
            return code, err.read().decode()


async def test_top_shows_every_partner_with_work_or_trouble_worst_first(
    redis: Redis,
    env: dict[str, str],
    settings: Settings,
    endpoint_factory: EndpointFactory,
    spawn: Spawn,
) -> None:
    env["NOTIFIER_RETRY_SCHEDULE"] = "100ms,60s"  # the failing partner's retries then wait

    async def fail(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    healthy: Endpoint = await endpoint_factory()
    failing: Endpoint = await endpoint_factory(fail)
    limited: Endpoint = await endpoint_factory()
    busy: Endpoint = await endpoint_factory(Capacity(3))
    for name, endpoint, extra in (
        ("shop-healthy", healthy, {}),
        ("shop-failing", failing, {}),
        ("shop-limited", limited, {"rate_limit": "2/second"}),
        ("shop-off", healthy, {"enabled": False}),
        ("shop-paced", busy, {}),
    ):
        await register(redis, settings, name, endpoint.url, [f"evt.{name}"], **extra)
    spawn("router")
    spawn("deliver")
    for n in range(3):
        await publish(redis, "evt.shop-failing", {"n": n})
        await publish(redis, "evt.shop-off", {"n": n})
    for n in range(60):
        await publish(redis, "evt.shop-limited", {"n": n})

    async def steady() -> None:
        """The healthy partner gets a steady flow, so it has a rate to show."""
        for n in range(10_000):
            await publish(redis, "evt.shop-healthy", {"n": n})
            await publish(redis, "evt.shop-paced", {"n": n})
            await asyncio.sleep(0.05)  # the flow's own pace, 20 events/s

    flow = asyncio.create_task(steady())
    terminal = Terminal(env)
    try:

        def shown() -> bool:
            terminal.text()
            states = {
                "shop-failing": "retrying",
                "shop-off": "disabled",
                "shop-limited": "limited",
                "shop-paced": "paced",
                "shop-healthy": "ok",
            }
            return all(state in terminal.row(name).split() for name, state in states.items())

        try:
            await eventually(shown, 20, "every partner with its state on screen")
        except AssertionError:
            print(terminal.text())
            raise
        screen = terminal.text()
    finally:
        flow.cancel()
        code, err = terminal.stop()
    assert code in (0, 130), err
    assert "Traceback" not in err
    assert "ingress lag" in screen and "processes reporting" in screen
    failing_row = terminal.row("shop-failing")
    assert "retrying" in failing_row and "3" in failing_row.split()  # its waiting messages
    assert "disabled" in terminal.row("shop-off")
    assert "3" in terminal.row("shop-off").split()  # its kept backlog
    healthy_row = terminal.row("shop-healthy").split()
    assert float(healthy_row[1]) > 0  # deliveries/s
    order = [line.split()[0] for line in terminal.lines() if line.startswith("shop-")]
    # worst first: retrying, then disabled... by the severity of their state
    assert order.index("shop-failing") < order.index("shop-healthy")
    assert order.index("shop-off") < order.index("shop-healthy")
