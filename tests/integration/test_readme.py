"""The README's commands work as written: every ```sh block after the first (which holds the
two set-up commands CI itself runs) is run line by line against a live notifier, with only
REDIS_URL, the token and the API's address set for this run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Spawn, free_port

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def sh_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())[1:]


@pytest.mark.slow
async def test_every_readme_command_runs(env: dict[str, str], spawn: Spawn, redis: Any) -> None:
    port = free_port()
    spawn("api", extra={"NOTIFIER_API_ADDR": f"127.0.0.1:{port}"})
    bin_dir = Path(sys.executable).parent
    shell_env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    import aiohttp

    from tests.helpers import eventually

    async def up() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/healthz") as resp,
            ):
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(up, 20, "the api to listen")
    for block in sh_blocks():
        script = block.replace("localhost:8080", f"127.0.0.1:{port}")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"README block failed:\n{block}\n{result.stderr}"
