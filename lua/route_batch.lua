-- route_batch.lua: route several whole ingress entries in one call, each as route.lua does one
-- (acknowledged with its fan-out in one step; skipped when another router did it), to spend
-- one script call on many small fan-outs rather than one each. Large fan-outs and dead letters
-- go through route.lua, so a call stays short.
-- Returns one number per entry: the partner streams it went to, -1 when already routed.
local ingress = KEYS[1]        -- the ingress stream
local ready = KEYS[2]          -- notifier:ready
local leases = KEYS[3]         -- notifier:leases
local dead = KEYS[4]           -- notifier:dead
local wake_list = KEYS[5]      -- notifier:wake
-- KEYS[6..]: per entry, as fan_out.lua takes them (its index hash, then 3 per partner)
local group = ARGV[1]
local now = tonumber(ARGV[2])
local dead_max = ARGV[3]
local retention = tonumber(ARGV[4])
local keep = ARGV[5] == '1'
-- ARGV[6..]: per entry: entry id, dedupe ttl, payload, wake, message id, n partners, then the
-- n partner ids

--@include wake_partners
--@include fan_out

local out = {}
local waking = {}
local indexed = {}
local routed = {}  -- deleted from the ingress stream in one call at the end
local key_at, a = 6, 6
while a <= #ARGV do
  local entry_id, dedupe_ttl, payload = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local wake, message_id, n = ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5])
  if redis.call('XACK', ingress, group, entry_id) == 0 then
    out[#out + 1] = -1
  else
    out[#out + 1] = fan_out(waking, indexed, dead, dead_max, now, retention, dedupe_ttl,
                            payload, message_id, wake, key_at, a + 6, n)
    routed[#routed + 1] = entry_id
  end
  key_at = key_at + 1 + 3 * n
  a = a + 6 + n
end
if not keep and #routed > 0 then
  redis.call('XDEL', ingress, unpack(routed))
end
wake_partners(ready, leases, wake_list, waking, now)
write_index(indexed, retention)
return out
