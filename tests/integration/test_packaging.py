"""The wheel, as the Dockerfile builds and installs it, carries the Lua scripts and delivers."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from notifier.config import Settings
from tests.helpers import EndpointFactory, free_port, publish, register

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
async def test_the_installed_wheel_runs_notifier(
    tmp_path: Path,
    redis: Redis,
    settings: Settings,
    env: dict[str, str],
    endpoint_factory: EndpointFactory,
) -> None:
    dist, site = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
        timeout=120,
    )
    [wheel] = dist.glob("notifier-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name for name in names if name.endswith(".lua")}
    assert shipped == {f"notifier/lua/{path.name}" for path in (ROOT / "lua").glob("*.lua")}
    # the console's templates and static files: nothing to build to serve it
    console = ROOT / "notifier" / "console"
    for folder in ("templates", "static"):
        for path in (console / folder).iterdir():
            assert f"notifier/console/{folder}/{path.name}" in names, path
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=120
    )

    endpoint = await endpoint_factory()
    await register(redis, settings, "p", endpoint.url, ["order.created"])
    api = f"127.0.0.1:{free_port()}"
    # `notifier run`, as the image's CMD, from outside the checkout: only the installed copy
    # (and its lua/) can be imported.
    proc = subprocess.Popen(
        [sys.executable, "-m", "notifier", "run"],
        cwd=tmp_path,
        env={**os.environ, **env, "PYTHONPATH": str(site), "NOTIFIER_API_ADDR": api},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        await publish(redis, "order.created", {"n": 1})
        await endpoint.wait_for(1, timeout=30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{api}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://{api}/console/login") as resp:
                assert resp.status == 200 and 'name="token"' in await resp.text()
            for name in ("console.js", "console.css"):
                async with http.get(f"http://{api}/console/static/{name}") as resp:
                    assert resp.status == 200 and (await resp.read())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert endpoint.bodies()[0]["data"] == {"n": 1}
    where = subprocess.run(
        [sys.executable, "-c", "import notifier.redis.lua as s; print(s.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(site)), where
    assert proc.returncode == 0, err.decode()
