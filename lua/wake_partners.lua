-- wake_partners.lua: included by the scripts that give partners new work (route, wake,
-- resend). A partner under lease or parked at its rate limit keeps its score: its holder (or
-- the end of the park) looks at its stream again then. Bringing a leased partner forward would
-- let a second process serve it beside the holder. Otherwise it is due now, and when that is
-- news (it was not due yet) the script says so, and its caller puts a token on `notifier:wake`
-- (rouse.lua) to rouse a delivery process blocked waiting for work: the wake-up list is shared
-- by every shard, so on a Cluster it is in another slot than the shard's keys.
-- All the partners of a call are looked at with two ZMSCOREs and moved with one ZADD, rather
-- than a few commands each: a route batch wakes tens of partners, and a command run from Lua
-- costs about a microsecond of Redis beyond its own work. `partners` holds each id once, at
-- most a route call's worth (FANOUT_CHUNK, 64), well within what unpack takes.

-- Add a partner to `partners`, a list that is also its own set (partner ids are strings, so
-- they never clash with the list's integer keys): each partner is woken once a call.
local function want_woken(partners, partner)
  if not partners[partner] then
    partners[partner] = true
    partners[#partners + 1] = partner
  end
end

-- Returns 1 when a partner became due now, else 0.
local function wake_partners(ready, leases, partners, now)
  if #partners == 0 then
    return 0
  end
  local parked = redis.call('ZMSCORE', leases, unpack(partners))
  local due = redis.call('ZMSCORE', ready, unpack(partners))
  local moved = {}   -- score, member pairs for `ready`
  for i, partner in ipairs(partners) do
    if (not parked[i] or tonumber(parked[i]) <= now) and (not due[i] or tonumber(due[i]) > now) then
      moved[#moved + 1] = now
      moved[#moved + 1] = partner
    end
  end
  if #moved == 0 then
    return 0
  end
  redis.call('ZADD', ready, unpack(moved))
  return 1
end
