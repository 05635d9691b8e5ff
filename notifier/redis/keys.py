"""Every Redis key notifier uses, on one screen.

All keys live under `notifier:` so one Redis can be shared. The keys of one partner carry the
partner id as a hash tag (`{id}`), so a Cluster deployment keeps a partner's keys on one slot.

    notifier:events                 stream   ingress (NOTIFIER_INGRESS_STREAM); group `router`
    notifier:dead                   stream   dead letters: malformed events and exhausted messages
    notifier:ops                    stream   operational events (MAXLEN ~10,000); group `router`
    notifier:partners               hash     partner id -> msgspec JSON of Partner
    notifier:partners:changes       stream   the id of every changed partner (MAXLEN ~10,000):
                                             routers follow it to update their index of
                                             subscriptions one partner at a time
    notifier:ready                  zset     partner id -> ms when it next has work (design note 1)
    notifier:leases                 zset     partner id -> ms its current lease ends
    notifier:wake                   list     wake-up tokens for blocked delivery processes (BLPOP),
                                             pushed when a partner becomes due (at most 64)
    notifier:disabled               set      ids of disabled partners
    notifier:processes              hash     process name -> JSON of its recent counters (for
                                             `notifier top`; entries older than a minute ignored)
    notifier:metrics:leader         string   the process that reports the deployment's shared
                                             gauges (backlogs, lag), renewed (TTL 30 s)
    notifier:janitor                string   lock of the hourly consumer pruning (TTL 1 h)
    notifier:fanout:<entry id>      string   chunks done of a split fan-out (TTL 1 h)
    notifier:messages:<tenth>       hash     the message index of the messages notifier named
                                             (`msg_<entry id>`) whose entry is of that tenth of
                                             a second: <message id> -> the message, and
                                             <message id>\t<partner id> -> its copy's state
                                             there (TTL NOTIFIER_MESSAGE_RETENTION from the
                                             last write)
    notifier:message:<message id>   hash     the same, for one message a producer named
    notifier:{id}:stream            stream   the partner's messages; group `delivery`
    notifier:{id}:due               zset     message id -> ms its retry is due
    notifier:{id}:inflight          zset     message id being sent -> ms it is visible again (a
                                             process that died sending it: retried by another)
    notifier:{id}:window            zset     sliding-window rate-limit log (one member a request)
    notifier:{id}:history           hash     message id -> msgspec JSON list of failed attempts
    notifier:{id}:attempts          stream   about the last ATTEMPTS_KEPT attempts, newest last,
                                             an entry per settled batch
    notifier:{id}:seen:<event id>   string   producer id dedupe marker, expires after DEDUPE_TTL
    notifier:{id}:failing           string   ms of the first failure of an unbroken failing run
    notifier:{id}:breaker           string   ms the breaker opened; deleted by the first success
    notifier:{id}:expiring:<ms>     string   a notifier.secret.expiring was sent (TTL 2 h)
    notifier:{id}:messages          stream   the messages routed to the partner (`m`: the
                                             message id; the entry id: when), trimmed to
                                             NOTIFIER_MESSAGE_RETENTION
"""

from __future__ import annotations

import re

PREFIX = "notifier:"
DEAD = PREFIX + "dead"
OPS = PREFIX + "ops"
OPS_KEPT = 10_000
PARTNERS = PREFIX + "partners"
PARTNER_CHANGES = PREFIX + "partners:changes"
PARTNER_CHANGES_KEPT = 10_000
READY = PREFIX + "ready"
LEASES = PREFIX + "leases"
JANITOR = PREFIX + "janitor"
DISABLED = PREFIX + "disabled"
PROCESSES = PREFIX + "processes"
METRICS_LEADER = PREFIX + "metrics:leader"
WAKE = PREFIX + "wake"

ROUTER_GROUP = "router"
DELIVERY_GROUP = "delivery"

ATTEMPTS_KEPT = 1000
DEAD_KEPT = 100_000
DEDUPE_TTL = 86_400
FANOUT_TTL = 3_600


#: The message index keeps the messages notifier named in one hash per tenth of a second, so
#: a message costs two hash fields rather than a key and a TTL of its own (bench 3a and 8d),
#: and a hash that expires frees a tenth of a second's worth at once (a few thousand
#: messages at full speed: a millisecond or so), not more.
INDEX_BUCKET_MS = 100
_NAMED = re.compile(r"msg_([0-9]{1,15})-[0-9]{1,20}")


def message_index(message_id: str) -> str:
    """The hash that holds a message in the message index: its tenth of a second's, for the
    ids notifier gives (`msg_<ingress entry id>`, which say when), else one of its own."""
    named = _NAMED.fullmatch(message_id)
    if named:
        return f"{PREFIX}messages:{int(named.group(1)) // INDEX_BUCKET_MS}"
    return f"{PREFIX}message:{message_id}"


def index_field(message_id: str, partner_id: str) -> str:
    """The field of a message's copy to one partner in its `message_index` hash (a message id
    is printable text, so it never holds the tab)."""
    return f"{message_id}\t{partner_id}"


def fanout(entry_id: str) -> str:
    return f"{PREFIX}fanout:{entry_id}"


def _partner(partner_id: str, name: str) -> str:
    return f"{PREFIX}{{{partner_id}}}:{name}"


def stream(partner_id: str) -> str:
    return _partner(partner_id, "stream")


def due(partner_id: str) -> str:
    return _partner(partner_id, "due")


def inflight(partner_id: str) -> str:
    return _partner(partner_id, "inflight")


def window(partner_id: str) -> str:
    return _partner(partner_id, "window")


def history(partner_id: str) -> str:
    return _partner(partner_id, "history")


def attempts(partner_id: str) -> str:
    return _partner(partner_id, "attempts")


def seen(partner_id: str, event_id: str) -> str:
    return _partner(partner_id, f"seen:{event_id}")


def failing(partner_id: str) -> str:
    return _partner(partner_id, "failing")


def expiring(partner_id: str, expires_ms: int) -> str:
    return _partner(partner_id, f"expiring:{expires_ms}")


def messages(partner_id: str) -> str:
    return _partner(partner_id, "messages")


def breaker(partner_id: str) -> str:
    return _partner(partner_id, "breaker")


def all_of(partner_id: str) -> list[str]:
    """The keys removed with a partner (dedupe markers expire by themselves)."""
    return [
        stream(partner_id),
        due(partner_id),
        inflight(partner_id),
        window(partner_id),
        history(partner_id),
        attempts(partner_id),
        failing(partner_id),
        breaker(partner_id),
        messages(partner_id),
    ]
