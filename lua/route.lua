-- route.lua: fan one ingress entry out to its partners' streams and acknowledge it, atomically.
-- A router that dies before this runs leaves the entry pending (another router claims it); one
-- that dies after has routed it completely. XACK returning 0 means another router already did
-- the work, so a claimed entry is never fanned out twice.
-- A fan-out to many partners is split into chunks, one call each, so no single call holds
-- Redis for long. Chunks run in order; `progress` counts the chunks done, so a router that
-- dies half-way and the one that claims the entry after it skip what was done. Only the last
-- chunk acknowledges the entry.
local ingress = KEYS[1]        -- the ingress stream
local ready = KEYS[2]          -- notifier:ready
local leases = KEYS[3]         -- notifier:leases
local dead = KEYS[4]           -- notifier:dead
local progress = KEYS[5]       -- notifier:fanout:<entry id>: chunks done of a split fan-out
local wake_list = KEYS[6]      -- notifier:wake
-- KEYS[7..]: the message's index hash (keys.message_index), then for each partner its
-- stream, its dedupe marker and its index of messages (see fan_out.lua)
local group = ARGV[1]
local entry_id = ARGV[2]
local now = tonumber(ARGV[3])
local dedupe_ttl = tonumber(ARGV[4])  -- 0: the producer gave no id, nothing to dedupe
local payload = ARGV[5]               -- the encoded Message, or the dead letter's entry
local wake = ARGV[6]                  -- per partner '1' (enabled: schedule it) or '0'
local dead_reason = ARGV[7]           -- non-empty: the entry is malformed
local dead_max = ARGV[8]
local chunk = tonumber(ARGV[9])       -- 0-based
local last = ARGV[10] == '1'          -- the last (or only) chunk: acknowledge the entry
local progress_ttl = ARGV[11]
local retention = tonumber(ARGV[12])  -- ms the message index keeps it; 0: no index
local message_id = ARGV[13]
local keep = ARGV[14] == '1'          -- keep routed entries (the ops stream is read by people)
local first_partner = 15              -- ARGV[15..]: partner ids, in the order of their keys

--@include wake_partners
--@include fan_out

if dead_reason ~= '' then
  if redis.call('XACK', ingress, group, entry_id) == 0 then
    return -1
  end
  if not keep then
    redis.call('XDEL', ingress, entry_id)
  end
  redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*', 'reason', dead_reason,
             'entry_id', entry_id, 'entry', payload)
  return 0
end

local split = chunk > 0 or not last
if split then
  if #redis.call('XPENDING', ingress, group, entry_id, entry_id, 1) == 0 then
    return -1  -- routed (and acknowledged) by another router already
  end
  if chunk < tonumber(redis.call('GET', progress) or '0') then
    return 0   -- done before a router stopped half-way
  end
elseif redis.call('XACK', ingress, group, entry_id) == 0 then
  return -1
end

local waking, indexed = {}, {}
local routed = fan_out(waking, indexed, dead, dead_max, now, retention, dedupe_ttl, payload,
                       message_id, wake, 7, first_partner, #ARGV - first_partner + 1)
wake_partners(ready, leases, wake_list, waking, now)
write_index(indexed, retention)

if split then
  if last then
    redis.call('XACK', ingress, group, entry_id)
    redis.call('DEL', progress)
  else
    redis.call('SET', progress, chunk + 1, 'EX', progress_ttl)
  end
end
-- routed entries are not kept: the partner streams hold what is still to be delivered
if last and not keep then
  redis.call('XDEL', ingress, entry_id)
end
return routed
