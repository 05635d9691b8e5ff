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
local message_key = KEYS[7]    -- notifier:message:<message id>: the message and its partners
-- KEYS[8..]: for partner i, its stream at 5 + 3i, its dedupe marker at 6 + 3i and its index of
-- messages (notifier:{id}:messages) at 7 + 3i
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

--@include wake_partner

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

local routed = 0
local indexed = {}  -- field, value pairs of the message's hash: one per partner
for i = 1, #ARGV - first_partner + 1 do
  local stream = KEYS[5 + 3 * i]
  local seen = KEYS[6 + 3 * i]
  local index = KEYS[7 + 3 * i]
  local partner = ARGV[first_partner - 1 + i]
  if dedupe_ttl == 0 or redis.call('SET', seen, '1', 'NX', 'EX', dedupe_ttl) then
    -- A script that fails half-way keeps what it wrote, and the entry may be acknowledged
    -- already: a partner stream that refuses the message (a key of the wrong type) gets its
    -- message dead-lettered, replayable, instead of failing the fan-out to everyone.
    local appended, added = pcall(redis.call, 'XADD', stream, '*', 'm', payload)
    local state
    if appended then
      routed = routed + 1
      if string.sub(wake, i, i) == '1' then
        wake_partner(ready, leases, wake_list, partner, now)
      end
      state = {s = 'pending', e = added, t = now}
    else
      local dead_id = redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*',
        'reason', 'could not append to the partner stream: ' .. tostring(added.err or added),
        'partner', partner, 'message', payload, 'attempts', '[]')
      state = {s = 'dead', t = now, x = dead_id}
    end
    if retention > 0 then
      redis.call('ZADD', index, now, message_id)
      redis.call('ZREMRANGEBYSCORE', index, '-inf', now - retention)
      indexed[#indexed + 1] = partner
      indexed[#indexed + 1] = cjson.encode(state)
    end
  end
end

if #indexed > 0 then
  redis.call('HSETNX', message_key, 'event', payload)
  redis.call('HSET', message_key, unpack(indexed))
  redis.call('PEXPIRE', message_key, retention)
end

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
