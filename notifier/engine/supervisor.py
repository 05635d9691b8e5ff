"""Every core from one command: N delivery workers under one supervisor.

A Python process uses one core, and delivery is CPU-bound, so `notifier deliver --processes N`
(or `auto`, one per core) starts N `notifier deliver` workers as child processes. They share
partners through leases like any delivery processes. The supervisor restarts a worker that
exits on its own (after a pause that grows while workers keep dying, so a worker that cannot
start does not spin), and on SIGTERM or SIGINT passes the signal on and waits for every worker
to finish its open requests and give its partners back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from notifier import logs

log = logs.get("supervisor")

#: Pauses before restarting a worker that exited: doubling while workers keep dying.
RESTART_FIRST = 0.5
RESTART_MAX = 30.0
#: A worker that ran this long was healthy: the next restart pause starts over.
HEALTHY_AFTER = 30.0


def worker_count(text: str) -> int:
    """`N` or `auto` (the cores this process may use)."""
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 256):
        raise ValueError("must be a number of processes from 1 to 256, or auto")
    return int(text)


async def supervise(
    count: int,
    stop: asyncio.Event,
    args: tuple[str, ...] = ("deliver",),
    metrics_addr: str | None = None,
) -> None:
    """Run `count` workers (`notifier <args>`) until `stop`; then stop them and wait. With
    `metrics_addr` (the supervisor's own), worker n serves its metrics on the port n + 1 above
    it, so Prometheus can scrape each at a stable address."""
    slots = [
        asyncio.create_task(_keep_one(n, args, stop, _worker_env(metrics_addr, n)))
        for n in range(count)
    ]
    log.info("delivery workers starting", workers=count)
    await asyncio.gather(*slots)


def _worker_env(metrics_addr: str | None, slot: int) -> dict[str, str]:
    env = dict(os.environ)
    if metrics_addr and metrics_addr != "none":
        host, _, port = metrics_addr.rpartition(":")
        env["NOTIFIER_METRICS_ADDR"] = f"{host}:{int(port) + 1 + slot}"
    else:
        env["NOTIFIER_METRICS_ADDR"] = "none"
    return env


async def _keep_one(
    slot: int, args: tuple[str, ...], stop: asyncio.Event, env: dict[str, str]
) -> None:
    pause = RESTART_FIRST
    while not stop.is_set():
        started = asyncio.get_running_loop().time()
        # A session of its own: a Ctrl-C at the terminal reaches the supervisor only, which
        # stops workers in order; a supervisor killed outright takes its workers with it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "notifier",
            *args,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.info("delivery worker started", worker=slot, pid=proc.pid)
        waiting = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            code = await waiting
            log.info("delivery worker stopped", worker=slot, pid=proc.pid, code=code)
            return
        stopping.cancel()
        code = waiting.result()
        if asyncio.get_running_loop().time() - started >= HEALTHY_AFTER:
            pause = RESTART_FIRST
        log.warning(
            "delivery worker exited; restarting it",
            worker=slot,
            pid=proc.pid,
            code=code,
            restart_in=pause,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        pause = min(pause * 2, RESTART_MAX)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the supervisor dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
