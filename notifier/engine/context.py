"""What a served partner (`served.py`) needs of the delivery process that leased it
(`delivery.py`): handed to it as one object, so neither module reads the other's attributes
and the two import in one direction only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from notifier.config import Settings
from notifier.crypto import SecretBox
from notifier.engine.sender import Sender
from notifier.redis.keys import Keyspace
from notifier.redis.lua import Scripts
from notifier.store import Store
from notifier.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from notifier.engine.served import ServedPartner


@dataclass(frozen=True)
class ServeContext:
    """What a served partner needs of the delivery process that leased it."""

    redis: Any
    settings: Settings
    keyspace: Keyspace
    scripts: Scripts
    sender: Sender
    store: Store
    box: SecretBox
    metrics: Metrics
    consumer: str
    lease_ms: int
    visible_ms: int
    #: a request taken longer ago than this is over (NOTIFIER_REQUEST_TIMEOUT and SETTLE_MS)
    open_ms: int
    stopping: asyncio.Event
    #: emits an operational event without making the caller wait for Redis
    report: Callable[[str, dict[str, Any]], None]
    #: hands back a served partner that could not be given back while Redis was away
    unreturned: Callable[[ServedPartner], None]
    #: a shard has a partner due now: the pool looks at it, and rouses a process blocked
    rouse: Callable[[int], None]
