"""The Lua scripts of `lua/`, registered once per client (EVALSHA, reloaded on NOSCRIPT).

The wheel ships them as `notifier/lua/`; a source checkout reads the top-level `lua/`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (_HERE / "lua", _HERE.parent / "lua")


@cache
def source(name: str) -> str:
    for folder in _CANDIDATES:
        path = folder / f"{name}.lua"
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"lua script {name}.lua not found in {_CANDIDATES}")


class Scripts:
    """The scripts bound to one client; pipelines pass `client=pipe` when calling them."""

    def __init__(self, redis: Redis) -> None:
        self.route: AsyncScript = redis.register_script(source("route"))
        self.lease: AsyncScript = redis.register_script(source("lease"))
        self.take: AsyncScript = redis.register_script(source("take"))
        self.release: AsyncScript = redis.register_script(source("release"))
        self.settle: AsyncScript = redis.register_script(source("settle"))
        self.wake: AsyncScript = redis.register_script(source("wake"))
