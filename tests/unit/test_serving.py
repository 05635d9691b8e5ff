"""A served partner's loop: it always yields time, ends after its quantum, and a rate-limited
partner never stalls its delivery process or its neighbours."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from notifier.engine.pacer import Pacer
from notifier.engine.served import MIN_PAUSE, QUANTUM, ServedPartner
from notifier.models import Partner, PartnerIn, now_ms
from notifier.ratelimit import MAX_LIMIT, parse_rate
from notifier.redis import lua
from notifier.redis.keys import Keyspace
from notifier.telemetry import Telemetry


class FakePool:
    """What a ServedPartner asks of its pool, with a take that always answers `took`."""

    def __init__(self, blocked_in_ms: int) -> None:
        self.stopping = asyncio.Event()
        self.lease_ms = self.visible_ms = 60_000
        self.open_ms = 11_000
        self.consumer = "test"
        self.blocked_in_ms = blocked_in_ms
        self.takes = 0
        self.scripts = self
        self.keyspace = Keyspace()
        self.metrics = Telemetry.disabled().metrics
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def report(self, event_type: str, data: dict[str, Any]) -> None:
        self.reports.append((event_type, data))

    def send(self, call: lua.Call[Any]) -> asyncio.Future[Any]:
        assert call.script == "take"
        self.takes += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(lua.TakeReply(now_ms() + self.blocked_in_ms, False, []))
        return future


def served(pool: FakePool, **partner: Any) -> ServedPartner:
    record = msgspec.json.encode(
        {"id": "ptn_x", "name": "x", "url": "https://x.example", "events": ["*"], **partner}
    )
    one = ServedPartner(pool, "ptn_x", record, 0)  # type: ignore[arg-type]
    one.partner = msgspec.json.decode(record, type=Partner)
    one.pacer = Pacer("ptn_x", False, 10, None)
    return one


@pytest.mark.parametrize("blocked_in_ms", [-10, -5000, 1, 50])
async def test_a_slot_time_already_past_never_spins_the_loop(blocked_in_ms: int) -> None:
    """The slot opened in the past (or opens soon) and nothing is in flight: the loop once kept
    a negative wait after its quantum and spun on sleep(0) for ever at 100 % CPU."""
    pool = FakePool(blocked_in_ms)
    one = served(pool)
    started = time.monotonic()
    cpu = time.process_time()
    await asyncio.wait_for(one._serve(), QUANTUM + 2)
    assert time.monotonic() - started <= QUANTUM + 0.5
    # one take per MIN_PAUSE at the very most: a spinning loop takes tens of thousands
    assert pool.takes <= QUANTUM / MIN_PAUSE
    assert time.process_time() - cpu < QUANTUM


async def test_a_serve_waiting_for_open_sends_takes_again_when_its_slot_opens() -> None:
    """A send hangs and the rate limit's next slot opens in 400 ms: the serve takes again
    then, a few times in its quantum, rather than only once the hanging send ends; at the
    quantum's end it returns with the send still open (its partner is given back with it)."""
    pool = FakePool(400)
    one = served(pool)
    hanging: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    one.inflight = {hanging: None}  # type: ignore[dict-item]
    started = time.monotonic()
    await asyncio.wait_for(one._serve(), QUANTUM + 2)
    assert QUANTUM - 0.1 <= time.monotonic() - started <= QUANTUM + 0.5
    assert pool.takes >= QUANTUM / 0.4 - 1
    assert one.inflight == {hanging: None} and not hanging.done()


@given(
    blocked_offset=st.integers(-(10**7), 10**7),
    deadline_offset=st.floats(-5, 5),
    inflight=st.integers(0, 20),
    stopping=st.booleans(),
)
@hsettings(max_examples=500, deadline=None, derandomize=True)
def test_the_pause_is_none_or_at_least_min_pause(
    blocked_offset: int, deadline_offset: float, inflight: int, stopping: bool
) -> None:
    pool = FakePool(0)
    if stopping:
        pool.stopping.set()
    one = served(pool)
    one.blocked_until = now_ms() + blocked_offset
    # only how many are in flight matters to _pause, not the tasks
    one.inflight = dict.fromkeys(range(inflight))  # type: ignore[arg-type, assignment]
    pause = one._pause(time.monotonic() + deadline_offset)
    assert pause is None or pause >= MIN_PAUSE
    if deadline_offset <= 0 or stopping or inflight >= one.pacer.cap():
        assert pause is None  # nothing to take: wait for the open sends, or end


@pytest.mark.parametrize(
    "text",
    [
        "5 per 100000000000000000 hours",
        "1 per 2000000000000 hours",
        f"{MAX_LIMIT + 1}/second",
        "0/second",
        "1/10 years",
    ],
)
def test_rate_limits_lua_cannot_hold_are_refused_when_saved(text: str) -> None:
    body = {"name": "x", "url": "https://x.example", "events": ["*"], "rate_limit": text}
    with pytest.raises(msgspec.ValidationError, match="rate_limit"):
        msgspec.convert(body, PartnerIn)


def test_the_largest_rate_limits_are_exact_in_lua_numbers() -> None:
    rate = parse_rate(f"{MAX_LIMIT}/24 hours")
    assert rate is not None
    # take.lua adds now (ms, ~2^41) to twice the window: far under 2^53, so exact
    assert now_ms() + 2 * rate.window_ms < 2**53
