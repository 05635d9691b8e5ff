"""Planning a batch's fan-out: which script calls route it, shard by shard. Pure: nothing here
talks to Redis, so the plan can be checked on its own.

An event's partners may sit in several shards, and a script touches one shard (one slot on a
Cluster). So an entry becomes one `Part` per shard it goes to, and a shard holding more than
FANOUT_CHUNK of its partners gets it in chunks, so that no call holds Redis for long. The
parts of one shard share calls, up to BATCH_PARTS parts or FANOUT_CHUNK partners a call, in
the order of the entries; a message's chunks are in order too, so they run in order. The
router acknowledges an entry once every part of it is in, whatever call carried it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from notifier.models import Partner
from notifier.redis.keys import Keyspace, Shard
from notifier.redis.lua import Part, PartRouted
from notifier.types import DeadReason

#: Partners per route call: a larger fan-out in one shard is split in chunks (a partner whose
#: stream is new costs Redis about 20 µs, so a call stays near a millisecond).
FANOUT_CHUNK = 64
#: Parts (small fan-outs of whole messages) that share one route call at most.
BATCH_PARTS = 50


@dataclass
class EntryPlan:
    """One ingress entry: the parts that route it, or the reason it is dead-lettered."""

    raw_id: bytes
    fields: dict[bytes, bytes]
    event_type: str = ""
    parts: list[tuple[Shard, Part]] = field(default_factory=list)
    dead_reason: str = ""
    dead_kind: DeadReason = "malformed"
    #: What became of each part, in the order of `parts` (None: its call failed).
    outcomes: list[PartRouted | None] = field(default_factory=list)
    #: For a dead letter: whether this router wrote it (False: written before); None until
    #: it is written.
    dead_written: bool | None = None
    #: Its route markers go once it is acknowledged (no producer id to dedupe).
    forget: bool = False
    #: Partners subscribed to it whose filter kept it from them: counted once it is routed.
    filtered: list[str] = field(default_factory=list)

    @property
    def entry_id(self) -> str:
        return self.raw_id.decode()

    def complete(self) -> bool:
        """Every part is in its shard, or the dead letter is written (now or before): the
        entry may be acknowledged."""
        if self.dead_reason:
            return self.dead_written is not None
        return all(o is not None and o != "gap" for o in self.outcomes)

    def fresh(self) -> bool:
        """This router did the work (the entry counts as routed, or dead-lettered, here)."""
        if self.dead_reason:
            return bool(self.dead_written)
        return any(isinstance(o, int) for o in self.outcomes) or not self.parts


def split(
    keyspace: Keyspace,
    entry_id: str,
    message_id: str,
    payload: bytes,
    marker_ttl: int,
    targets: Sequence[Partner],
) -> list[tuple[Shard, Part]]:
    """An entry's parts: per shard of its partners, one part per FANOUT_CHUNK of them."""
    by_shard: dict[int, list[tuple[str, bool]]] = {}
    for partner in targets:
        shard = keyspace.shard_of(partner.id)
        by_shard.setdefault(shard.number, []).append((partner.id, partner.enabled))
    parts = []
    for number in sorted(by_shard):
        pairs = by_shard[number]
        for chunk, start in enumerate(range(0, len(pairs), FANOUT_CHUNK)):
            part = Part(
                entry_id=entry_id,
                message_id=message_id,
                payload=payload,
                marker_ttl=marker_ttl,
                chunk=chunk,
                partners=pairs[start : start + FANOUT_CHUNK],
            )
            parts.append((keyspace.shards[number], part))
    return parts


@dataclass
class Unit:
    """One route call's worth: parts of one shard, and where each came from."""

    shard: Shard
    members: list[tuple[EntryPlan, int]] = field(default_factory=list)  # (plan, part index)
    partners: int = 0

    def parts(self) -> list[Part]:
        return [plan.parts[i][1] for plan, i in self.members]


def units(plans: Sequence[EntryPlan]) -> list[Unit]:
    """The route calls of a batch, in an order that keeps each shard's parts in entry order."""
    open_units: dict[int, Unit] = {}
    done: list[Unit] = []
    for plan in plans:
        for i, (shard, part) in enumerate(plan.parts):
            unit = open_units.get(shard.number)
            size = len(part.partners)
            if unit is not None and (
                len(unit.members) >= BATCH_PARTS or unit.partners + size > FANOUT_CHUNK
            ):
                done.append(unit)
                unit = None
            if unit is None:
                unit = open_units[shard.number] = Unit(shard)
            unit.members.append((plan, i))
            unit.partners += size
    return done + list(open_units.values())
