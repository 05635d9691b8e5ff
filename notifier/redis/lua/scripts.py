"""Loading the Lua scripts of `lua/` and sending their calls.

A script's KEYS and ARGV are positional, so their order must agree between the `.lua` file and
its caller. Each script has one builder (in `route.py`, `serve.py`, `records.py`, `upkeep.py`) that
takes named parameters and returns a `Call`: the script's name, its keys and arguments, and how
to read its reply into a small typed value, so that order lives in one place, beside the
script's own header comment. How a call travels is the caller's choice: `Scripts.run` sends it
alone, `Scripts.send` auto-pipelines it with the other calls of the same moment
(`autopipeline.py`), `Scripts.queue` adds it to an explicit pipeline.

Scripts share code through `--@include <name>`: the loader pastes `lua/<name>.lua` in its place,
so the rule for waking a partner is written once (`lua/wake_partners.lua`).

The wheel ships the scripts as `notifier/lua/`; a source checkout reads the top-level `lua/`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from notifier.redis.autopipeline import AutoPipeline

_PACKAGE = Path(__file__).resolve().parents[2]  # notifier/
# the wheel ships the scripts as notifier/lua/; a source checkout has them at the top
_CANDIDATES = (_PACKAGE / "lua", _PACKAGE.parent / "lua")
_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)

R = TypeVar("R")


@cache
def _folder() -> Path:
    for folder in _CANDIDATES:
        if (folder / "settle.lua").is_file():
            return folder
    raise FileNotFoundError(f"lua scripts not found in {_CANDIDATES}")


@cache
def source(name: str) -> str:
    path = _folder() / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"lua script {name}.lua not found in {_folder()}")
    return _INCLUDE.sub(lambda m: source(m.group(1)), path.read_text())


@cache
def names() -> tuple[str, ...]:
    """Every script a builder calls: the files of `lua/`, less those only pasted into others
    (`--@include`)."""
    texts = {path.stem: path.read_text() for path in _folder().glob("*.lua")}
    included = {name for text in texts.values() for name in _INCLUDE.findall(text)}
    return tuple(sorted(set(texts) - included))


@dataclass(frozen=True, slots=True)
class Call(Generic[R]):
    """One script call, ready to send: built by the builder functions, never by hand."""

    script: str
    keys: Sequence[str]
    args: Sequence[Any]
    read: Callable[[Any], R]


class Scripts:
    """The scripts registered on one client (EVALSHA, loaded again on NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(source(name)) for name in names()
        }
        self._auto = AutoPipeline(redis)

    async def run(self, call: Call[R]) -> R:
        """Send one call on its own and read its reply."""
        script = self._scripts[call.script]
        return call.read(await script(keys=call.keys, args=call.args))

    def send(self, call: Call[R]) -> asyncio.Future[R]:
        """Queue `call` now, auto-pipelined with the other calls of this moment (order kept);
        the future holds its reply."""
        raw = self._auto.call(self._scripts[call.script], call.keys, call.args)
        read: asyncio.Future[R] = asyncio.get_running_loop().create_future()

        def done(reply: asyncio.Future[Any]) -> None:
            if read.cancelled():
                return
            if reply.cancelled():
                read.cancel()
            elif (exc := reply.exception()) is not None:
                read.set_exception(exc)
            else:
                try:
                    read.set_result(call.read(reply.result()))
                except Exception as bad:  # a reply of an unexpected shape
                    read.set_exception(bad)

        raw.add_done_callback(done)
        return read

    async def queue(self, pipe: Pipeline, call: Call[Any]) -> None:
        """Add `call` to an explicit pipeline; read its reply with `call.read`."""
        await self._scripts[call.script](keys=call.keys, args=call.args, client=pipe)


def as_int(reply: Any) -> int:
    return int(reply)
