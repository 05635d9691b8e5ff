"""Auto-pipelining: script calls made while a round trip is out travel together in the next one.

Every serving coroutine takes and settles its own partner's messages. Run one by one, those
calls cost more CPU than the HTTP requests they serve: on loopback, one redis-py round trip is
about 250 µs of client CPU, and most of it is the system calls, not the command. So calls queue
while a pipeline is in flight and go out as the next pipeline, the way ioredis's
`enableAutoPipelining` works. A round trip then carries the work of several partners, and each
call costs a fraction of that. redis-py has no such mode (redis/redis-py#3767).

Order is kept: calls run on the server in the order they were made, so a coroutine may queue a
settle and then a take without waiting in between. Each script is still atomic on its own; a
pipeline is not a transaction, and nothing here needs one. A call once made is sent even if its
caller stops waiting, as a request already on the wire would be: a take whose reply nobody
reads leaves its messages to be retried after NOTIFIER_CLAIM_IDLE, like a crashed process's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queue: list[Call] = []
        self._sender: asyncio.Task[None] | None = None

    def call(
        self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        """Queue one script call; its reply (or error) arrives in the returned future."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        if self._sender is None:
            # Starts on the next turn of the loop: calls made in this turn join the first batch.
            self._sender = asyncio.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._send(batch)
                finally:
                    for *_, future in batch:
                        if not future.done():  # the sender itself was cancelled
                            future.cancel()
        finally:
            self._sender = None
            for *_, future in self._queue:
                future.cancel()
            self._queue = []

    async def _send(self, batch: list[Call]) -> None:
        if len(batch) == 1:
            # Alone, a plain call is cheaper than a pipeline of one.
            script, keys, args, future = batch[0]
            _resolve(future, await _outcome(script(keys=keys, args=args)))
            return
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: so did every call in it
            for *_, future in batch:
                _resolve(future, exc)
            return
        for (script, keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # Redis restarted or flushed its scripts: the script object loads it again.
                reply = await _outcome(script(keys=keys, args=args))
            _resolve(future, reply)


async def _outcome(call: Any) -> Any:
    try:
        return await call
    except Exception as exc:
        return exc


def _resolve(future: asyncio.Future[Any], reply: Any) -> None:
    if future.done():  # its caller gave up waiting
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(reply)
