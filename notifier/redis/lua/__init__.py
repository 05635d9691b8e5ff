"""The Lua scripts of `lua/`, each behind exactly one typed builder (`scripts.py` says how)."""

from notifier.redis.lua.records import Saved, remove_partner, save_partner
from notifier.redis.lua.route import Part, PartRouted, Routed, ack, dead_event, forget, route
from notifier.redis.lua.scripts import Call, Scripts, source
from notifier.redis.lua.serve import (
    Dead,
    IndexUpdate,
    Leased,
    Released,
    Retry,
    Settled,
    TakeReply,
    Told,
    lease,
    release,
    settle,
    take,
    unlease,
)
from notifier.redis.lua.upkeep import Resent, hold, prune_consumers, resend, rouse, wake

__all__ = [
    "Call",
    "Dead",
    "IndexUpdate",
    "Leased",
    "Part",
    "PartRouted",
    "Released",
    "Resent",
    "Retry",
    "Routed",
    "Saved",
    "Scripts",
    "Settled",
    "TakeReply",
    "Told",
    "ack",
    "dead_event",
    "forget",
    "hold",
    "lease",
    "prune_consumers",
    "release",
    "remove_partner",
    "resend",
    "rouse",
    "route",
    "save_partner",
    "settle",
    "source",
    "take",
    "unlease",
    "wake",
]
