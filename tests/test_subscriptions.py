"""The index of subscriptions routes exactly as a scan of every partner would, and follows
partner changes one partner at a time."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.asyncio import Redis

from notifier import keys
from notifier.config import Settings
from notifier.models import Partner, PartnerPatch
from notifier.router import Router
from notifier.store import Store
from notifier.subscriptions import Subscriptions
from tests.helpers import register

TYPES = ["order.created", "order.paid", "refund.issued", "a", "b"]
_patterns = st.lists(st.sampled_from([*TYPES, "*"]), min_size=1, max_size=4)
_ops = st.lists(st.tuples(st.sampled_from(["put", "remove", "disable", "enable"]),
                          st.integers(0, 9), _patterns), max_size=60)


def scan(partners: dict[str, Partner], event_type: str) -> list[str]:
    return sorted(p.id for p in partners.values() if p.subscribes(event_type))


@given(_ops)
@hsettings(max_examples=300, deadline=None, derandomize=True)
def test_the_index_routes_as_a_full_scan(ops: list[tuple[str, int, list[str]]]) -> None:
    index = Subscriptions()
    truth: dict[str, Partner] = {}
    for op, n, patterns in ops:
        pid = f"ptn_{n}"
        if op == "put":
            truth[pid] = Partner(id=pid, name=pid, url="https://x", events=patterns)
            index.put(truth[pid])
        elif op == "remove":
            truth.pop(pid, None)
            index.remove(pid)
        elif pid in truth:
            truth[pid].enabled = op == "enable"
            index.put(truth[pid])
        for event_type in [*TYPES, "never.subscribed"]:
            assert [p.id for p in index.targets(event_type)] == scan(truth, event_type)
            # disabled partners are routed to as well: their messages are kept
            assert all(p is truth[p.id] for p in index.targets(event_type))


async def test_a_running_router_follows_changes_one_partner_at_a_time(
        redis: Redis, settings: Settings, monkeypatch: Any) -> None:
    a, _ = await register(redis, settings, "a", "https://a.example", ["order.created"])
    router = Router(redis, settings)
    await router.refresh_partners()
    loads = []
    original = router._load_all

    async def counted() -> None:
        loads.append(1)
        await original()

    monkeypatch.setattr(router, "_load_all", counted)
    store = Store(redis, settings)
    b, _ = await register(redis, settings, "b", "https://b.example", ["*"])
    await store.update(a, PartnerPatch(events=["order.paid"]))
    index = await router.refresh_partners()
    assert [p.id for p in index.targets("order.created")] == [b]
    assert sorted(p.id for p in index.targets("order.paid")) == sorted([a, b])
    await store.remove(b)
    assert [p.id for p in (await router.refresh_partners()).targets("order.paid")] == [a]
    assert loads == []  # no full reload for any of these

    # Redis lost its data: the index must not route to partners that no longer exist.
    await redis.flushall()
    c, _ = await register(redis, settings, "c", "https://c.example", ["order.paid"])
    assert [p.id for p in (await router.refresh_partners()).targets("order.paid")] == [c]
    assert loads == [1]

    # The change log was trimmed past the router's cursor: everything is read again.
    router._cursor = b"1-0"
    await redis.xadd(keys.PARTNER_CHANGES, {"id": c})
    await router.refresh_partners()
    assert loads == [1, 1]
