"""Every Redis key notifier uses, on one screen.

All keys live under `notifier:` so one Redis can be shared (an ACL user limited to
`~notifier:*`). Partners are spread over a fixed number of shards (NOTIFIER_SHARDS), a hash of
the partner id choosing its shard, so that on a Redis Cluster every script touches the keys of
one slot: a shard's keys all carry the shard's hash tag. On one Redis there are no slots, so
the same layout keeps plain names: a shard's own keys get a plain prefix, and the records every
shard shares (partners, dead letters, the message index) keep one set of keys.

Deployment-wide, the same on one Redis and on a Cluster:

    notifier:events                 stream   ingress (NOTIFIER_INGRESS_STREAM); group `router`
    notifier:ops                    stream   operational events (MAXLEN ~10,000); group `router`
    notifier:dead                   stream   dead letters: malformed events, and on one Redis
                                             exhausted messages too (MAXLEN ~100,000)
    notifier:{notifier:dead}:seen:<entry id>
                                    string   a malformed entry was dead-lettered (TTL 1 h):
                                             in the dead letters' slot, so the dead letter and
                                             its marker are written in one step
    notifier:wake                   list     wake-up tokens (shard numbers) for blocked delivery
                                             processes (BLPOP), at most 64
    notifier:processes              hash     process name -> JSON of its recent counters
    notifier:metrics:leader         string   the process reporting shared gauges (TTL 30 s)
    notifier:history:<minute>       hash     "<partner id>\\ta"/"\\tf" -> attempts/failures in
                                             that minute, for the console's chart (TTL 65 min)
    notifier:console:session:<sha256 of the session id>
                                    string   a console session's CSRF token (TTL: its life)
    notifier:console:notice:<sha256 of the session id>
                                    string   JSON: what the session's next page says (TTL 5 min)
    notifier:janitor                string   lock of the hourly consumer pruning (TTL 1 h)
    notifier:layout                 string   JSON: the deployment's number of shards, and
                                             whether on a Cluster (`shards.py`)

A shard's own keys; `<s>` is `notifier:` for shard 0 and `notifier:s<n>:` for the others on one
Redis, `notifier:{<tag>}:` on a Cluster (the tag chosen so shard n's slot falls in the n-th
of NOTIFIER_SHARDS equal ranges, which spreads shards evenly over the primaries):

    <s>ready                        zset     partner id -> ms when it next has work
    <s>leases                       zset     partner id -> ms its current lease ends
    <s>seen:<message id>            string   "<entry id> <chunks done>": the message's fan-out
                                             to this shard is done up to that chunk; only
                                             when the message index does not keep it long
                                             enough to say so itself (TTL 24 h for a
                                             producer's id, so it dedupes; else deleted once
                                             the entry is acknowledged)

Shared records, under shard 0's prefix on one Redis and each shard's own on a Cluster:

    <s>partners                     hash     partner id -> msgspec JSON of Partner
    <s>partners:changes             stream   the id of every changed partner (MAXLEN ~10,000):
                                             routers follow it to update their index
    <s>disabled                     set      ids of disabled partners
    <s>dead                         stream   a Cluster shard's dead letters (on one Redis they
                                             are all in notifier:dead)
    <s>messages:<tenth>             hash     the message index: each message, in the hash of
                                             its ingress entry's tenth of a second: <message
                                             id> -> "<copies>\n<event>", a copy being "<partner
                                             id> <state>" (lua/index.lua) (TTL: the retention)
    <s>ids:<generation>             hash     a producer's message id -> the ingress entry it
                                             was first routed from, by route time in
                                             generations (`ids_generation_ms`): how such a
                                             message is found, and how its id is deduped
                                             (UNLINKed by the janitor once past the retention;
                                             TTL two hours later)

A partner's keys: `notifier:{<partner id>}:<name>` on one Redis, `<s><partner id>:<name>` on a
Cluster (in its shard's slot):

    stream      stream   the partner's messages; group `delivery`
    due         zset     message id -> ms its retry is due
    inflight    zset     message id being sent -> ms it is visible again
    slices      string   the rate-limit window: requests per fiftieth of it and their sum,
                         packed (lua/window.lua); a rate-limited or paced partner has one
    pace        hash     while the partner is paced (it answered 429, 502, 503, 504 or
                         timed out): its effective rate and concurrency, since when, why,
                         a pause it asked for (TTL: a minute past its last change or pause)
    spared      hash     message id -> its attempts that pacing absorbed (not counted in its
                         retry schedule); a field leaves with its message
    history     hash     message id -> msgspec JSON list of failed attempts
    attempts    stream   about the last ATTEMPTS_KEPT attempts, newest last
    failing     string   ms of the first failure of an unbroken failing run
    breaker     string   ms the breaker opened; deleted by the first success
    expiring:<ms> string a notifier.secret.expiring was sent (TTL 2 h)
    messages    stream   the messages routed to the partner, trimmed to the retention
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "notifier:"
DEAD = PREFIX + "dead"
OPS = PREFIX + "ops"
OPS_KEPT = 10_000
WAKE = PREFIX + "wake"
WAKE_KEPT = 64
PROCESSES = PREFIX + "processes"
METRICS_LEADER = PREFIX + "metrics:leader"
HISTORY = PREFIX + "history:"
CONSOLE_SESSION = PREFIX + "console:session:"
CONSOLE_NOTICE = PREFIX + "console:notice:"
JANITOR = PREFIX + "janitor"
LAYOUT = PREFIX + "layout"
PARTNER_CHANGES_KEPT = 10_000

ROUTER_GROUP = "router"
DELIVERY_GROUP = "delivery"

ATTEMPTS_KEPT = 1000
DEAD_KEPT = 100_000
DEDUPE_TTL = 86_400
DEAD_MARKER_TTL = 3_600
#: The most shards a deployment may have: a slot each at most.
MAX_SHARDS = 1024

#: The message index keeps messages in one hash per tenth of a second of their ingress
#: entries, so a message costs a hash field rather than a key and a TTL of its own, and a hash
#: that expires frees a tenth of a second's worth at once.
INDEX_BUCKET_MS = 100
#: Producers' ids are mapped to their ingress entries in generations of up to this long: a
#: route call looks its producer ids up in the generations of the last DEDUPE_TTL (three, an
#: HMGET each for all of them), a look-up in those of the retention.
IDS_GENERATION_MS = 12 * 3600 * 1000
#: A generation outlives the look-ups that read it by this much, for a router's hourly
#: janitor to UNLINK it first: a big hash freed by its TTL would stall Redis while freed.
IDS_GRACE_MS = 2 * 3600 * 1000
_NAMED = re.compile(r"msg_([0-9]{1,15}-[0-9]{1,20})")


def named_entry(message_id: str) -> str | None:
    """The ingress entry id of a message id notifier gave (`msg_<entry id>`), else None."""
    named = _NAMED.fullmatch(message_id)
    return named.group(1) if named else None


def ids_generation_ms(retention_ms: int) -> int:
    """How long a generation of producer ids is: a quarter of the retention (so the map
    outlives the messages it finds by a quarter at most), from 1 s to IDS_GENERATION_MS.
    Changing the retention below 24 h renumbers the generations: ids mapped before are not
    found (their messages are, by their partners' lists)."""
    return max(1000, min(IDS_GENERATION_MS, retention_ms // 4))


def dead_marker(entry_id: str) -> str:
    """The marker of a dead-lettered ingress entry, in `notifier:dead`'s slot."""
    return f"{PREFIX}{{{DEAD}}}:seen:{entry_id}"


@dataclass(frozen=True, slots=True)
class PartnerKeys:
    """One partner's keys."""

    id: str
    base: str  # every key of the partner is `base` + its name

    @property
    def stream(self) -> str:
        return self.base + "stream"

    @property
    def due(self) -> str:
        return self.base + "due"

    @property
    def inflight(self) -> str:
        return self.base + "inflight"

    @property
    def slices(self) -> str:
        return self.base + "slices"

    @property
    def pace(self) -> str:
        return self.base + "pace"

    @property
    def spared(self) -> str:
        return self.base + "spared"

    @property
    def history(self) -> str:
        return self.base + "history"

    @property
    def attempts(self) -> str:
        return self.base + "attempts"

    @property
    def failing(self) -> str:
        return self.base + "failing"

    @property
    def breaker(self) -> str:
        return self.base + "breaker"

    @property
    def messages(self) -> str:
        return self.base + "messages"

    def expiring(self, expires_ms: int) -> str:
        return f"{self.base}expiring:{expires_ms}"

    def all(self) -> list[str]:
        """The keys removed with a partner (expiry markers expire by themselves)."""
        names = ("stream", "due", "inflight", "slices", "history", "attempts")
        return [self.base + n for n in (*names, "failing", "breaker", "messages", "pace", "spared")]


@dataclass(frozen=True, slots=True)
class Shard:
    """The keys of one shard: its scheduling keys, and where its records are kept."""

    number: int
    prefix: str  # the shard's own keys
    home: str  # its records: its own prefix on a Cluster, shard 0's on one Redis
    cluster: bool

    @property
    def ready(self) -> str:
        return self.prefix + "ready"

    @property
    def leases(self) -> str:
        return self.prefix + "leases"

    @property
    def partners(self) -> str:
        return self.home + "partners"

    @property
    def changes(self) -> str:
        return self.home + "partners:changes"

    @property
    def disabled(self) -> str:
        return self.home + "disabled"

    @property
    def dead(self) -> str:
        return self.home + "dead" if self.cluster else DEAD

    def seen(self, message_id: str) -> str:
        return f"{self.prefix}seen:{message_id}"

    def bucket(self, entry_id: str) -> str:
        """The message index hash of the messages of an ingress entry's tenth of a second."""
        return f"{self.home}messages:{int(entry_id.partition('-')[0]) // INDEX_BUCKET_MS}"

    def generation(self, number: int) -> str:
        """A generation of the map of producers' ids (route time // ids_generation_ms)."""
        return f"{self.home}ids:{number}"

    def partner(self, partner_id: str) -> PartnerKeys:
        if self.cluster:
            return PartnerKeys(partner_id, f"{self.prefix}{partner_id}:")
        return PartnerKeys(partner_id, f"{PREFIX}{{{partner_id}}}:")


class Keyspace:
    """The key map of one deployment: how many shards, and whether on a Cluster. Handed to
    whoever talks to Redis, so that which key a partner's data is under is decided here."""

    def __init__(self, shards: int = 1, cluster: bool = False) -> None:
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be from 1 to {MAX_SHARDS}")
        self.cluster = cluster
        self.shards = tuple(self._shard(n, shards) for n in range(shards))
        self._partners: dict[str, PartnerKeys] = {}

    def _shard(self, n: int, count: int) -> Shard:
        if self.cluster:
            prefix = f"{PREFIX}{{{spread_tag(n, count)}}}:"
            return Shard(n, prefix, prefix, True)
        prefix = PREFIX if n == 0 else f"{PREFIX}s{n}:"
        return Shard(n, prefix, PREFIX, False)

    def shard_of(self, partner_id: str) -> Shard:
        if len(self.shards) == 1:
            return self.shards[0]
        return self.shards[zlib.crc32(partner_id.encode()) % len(self.shards)]

    def partner(self, partner_id: str) -> PartnerKeys:
        """A partner's keys (kept: the serve loop asks at every take and settle)."""
        found = self._partners.get(partner_id)
        if found is None:
            if len(self._partners) > 100_000:
                self._partners.clear()
            found = self._partners[partner_id] = self.shard_of(partner_id).partner(partner_id)
        return found

    @cached_property
    def homes(self) -> tuple[Shard, ...]:
        """One shard per set of records: every shard on a Cluster, shard 0 on one Redis."""
        return self.shards if self.cluster else self.shards[:1]

    @cached_property
    def dead_streams(self) -> tuple[str, ...]:
        """Every stream that holds dead letters, `notifier:dead` first."""
        return (DEAD, *(s.dead for s in self.homes if s.dead != DEAD))


def spread_tag(n: int, count: int) -> str:
    """The hash tag of shard `n` of `count`: the first of `s<n>`, `s<n>.1`, `s<n>.2`, ...
    whose slot lies in the n-th of `count` equal ranges of the 16,384 slots. A Cluster made
    with `redis-cli --cluster create` gives each primary an equal run of slots, so the shards
    spread evenly over its primaries instead of wherever their names happen to hash."""
    low = n * REDIS_CLUSTER_HASH_SLOTS // count
    high = (n + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    k = 0
    while True:
        tag = f"s{n}" if k == 0 else f"s{n}.{k}"
        if low <= key_slot(tag.encode()) < high:
            return tag
        k += 1
