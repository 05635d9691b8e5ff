"""No Redis password anywhere: with a wrong password, a URL notifier refuses, or sentinels it
cannot reach, neither the error a process prints, nor its log lines, nor /healthz, /metrics
and the API's answers show the password of REDIS_URL or of the sentinels."""

from __future__ import annotations

import functools
import signal
import subprocess
from collections.abc import Iterator

import aiohttp
import pytest

from tests.helpers import TOKEN, RedisServer, Spawn, cli, eventually, free_port

PASSWORD = "Wr0ng-but-real-Pa55word"
SENTINEL_PASSWORD = "Sentinel-Pa55word-9"


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis whose default user has a password notifier is not given."""
    server = RedisServer(tmp_path_factory.mktemp("locked"), args=["--requirepass", "the-real-one"])
    server.start()
    yield server
    server.stop()


def shows_no_password(text: str) -> bool:
    return PASSWORD not in text and SENTINEL_PASSWORD not in text


def stopped_output(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.stderr is not None
    return proc.stderr.read().decode()


def test_a_wrong_password_is_one_line_naming_redis_url(
    locked: RedisServer, env: dict[str, str], spawn: Spawn
) -> None:
    env["REDIS_URL"] = f"redis://default:{PASSWORD}@127.0.0.1:{locked.port}/0"
    env["NOTIFIER_LOG_LEVEL"] = "debug"  # the traceback too
    listed = cli(env, "partners", "list")
    assert listed.returncode == 1
    assert "refused the credentials of REDIS_URL" in listed.stderr
    assert "redis://default:***@127.0.0.1" in listed.stderr
    assert shows_no_password(listed.stderr + listed.stdout)
    # a process stops at start-up with that line instead of retrying what cannot work
    del env["NOTIFIER_LOG_LEVEL"]
    api = spawn("api", extra={"NOTIFIER_API_ADDR": f"127.0.0.1:{free_port()}"})
    assert api.wait(30) == 1
    said = stopped_output(api).strip()
    assert said.startswith("notifier: error: Redis at redis://default:***@")
    assert "refused the credentials of REDIS_URL" in said and "\n" not in said
    assert shows_no_password(said)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://notifier:{PASSWORD}@127.0.0.1:notaport/0",
        f"redis://notifier:{PASSWORD}/x@127.0.0.1:6379/0",
        f"redis+sentinel://notifier:{PASSWORD}@127.0.0.1:1/mymaster/x",
        f"redis+sentinel://127.0.0.1:1?sentinel_password={SENTINEL_PASSWORD}",
    ],
)
def test_a_refused_url_is_one_line_without_its_password(
    url: str, env: dict[str, str], spawn: Spawn
) -> None:
    env["REDIS_URL"] = url
    router = spawn("router")
    assert router.wait(30) == 1
    said = stopped_output(router).strip()
    assert said.startswith("notifier: error: REDIS_URL=") and "\n" not in said
    assert shows_no_password(said)


@pytest.mark.slow
async def test_unreachable_sentinels_show_no_password_while_notifier_waits(
    env: dict[str, str], spawn: Spawn
) -> None:
    closed = [free_port(), free_port()]
    env["REDIS_URL"] = (
        f"redis+sentinel://notifier:{PASSWORD}@127.0.0.1:{closed[0]},127.0.0.1:{closed[1]}"
        f"/mymaster/0?sentinel_password={SENTINEL_PASSWORD}"
    )
    env["NOTIFIER_LOG_LEVEL"] = "debug"
    api_addr, metrics_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    api = spawn("api", extra={"NOTIFIER_API_ADDR": api_addr})
    router = spawn("router", extra={"NOTIFIER_METRICS_ADDR": metrics_addr})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def unavailable(addr: str) -> bool:
            try:
                async with http.get(f"http://{addr}/healthz") as resp:
                    answers.append(await resp.text())
                    return resp.status == 503 and "unreachable" in answers[-1]
            except aiohttp.ClientError:
                return False

        for addr in (api_addr, metrics_addr):
            await eventually(functools.partial(unavailable, addr), 30, f"/healthz of {addr}")
            async with http.get(f"http://{addr}/metrics") as resp:
                assert resp.status == 200
                answers.append(await resp.text())
        for method, path, body in (
            ("GET", "/v1/partners", None),
            ("POST", "/v1/events", {"type": "order.created", "data": {}}),
            ("POST", "/v1/partners", {"name": "x", "url": "http://127.0.0.1:1/", "events": ["*"]}),
        ):
            async with http.request(
                method, f"http://{api_addr}{path}", json=body, headers=auth
            ) as resp:
                assert resp.status == 503, await resp.text()
                answers.append(await resp.text())
    assert "No master found for 'mymaster' through the sentinels" in answers[0], answers[0]
    for answer in answers:
        assert shows_no_password(answer), answer
    listed = cli({**env, "NOTIFIER_LOG_LEVEL": "warning"}, "partners", "list")
    assert listed.returncode == 1 and "\n" not in listed.stderr.strip()
    assert "no sentinel of REDIS_URL" in listed.stderr, listed.stderr
    assert shows_no_password(listed.stderr + listed.stdout)
    for proc in (api, router):
        assert proc.poll() is None, "a process gave up on the sentinels"
        logged = stopped_output(proc)
        assert "redis unreachable" in logged and "Traceback" not in logged, logged
        assert shows_no_password(logged), logged
