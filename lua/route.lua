-- route.lua: append ingress messages to the streams of their partners in one shard, each
-- message at most once. The router acknowledges an ingress entry only after every shard it
-- goes to has it, so a router that dies in between leaves the entry to be routed again; what
-- the shard remembers of the message makes that second routing append nothing twice.
-- A fan-out to many partners in one shard is split into chunks, one part each, so no single
-- call holds Redis for long; several small messages share one call.
-- What the shard remembers, by the part's marker ttl:
-- - 0: the message index, which keeps the message longer than anything needs: the field of
--   each partner's copy says that partner has it (so a producer's id published twice, or a
--   part routed again, appends only to partners without it);
-- - else (no index, or one kept shorter than the producer-id dedupe) the marker `seen`,
--   "<entry id> <chunks done>", for that many seconds: another entry's id there is the same
--   producer id published twice, skipped; this entry's id says up to which chunk it is in.
-- Returns {1 when a partner became due now (the caller rouses a delivery process) else 0,
-- then per part: the partner streams it went to, -1 when routed already (or a duplicate), -2
-- when an earlier chunk is missing}.
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
local dead = KEYS[3]           -- the shard's dead letters
-- KEYS[4..]: per part: its marker, its index hash, then per partner its stream and its list
-- of messages (fan_out.lua)
local now = tonumber(ARGV[1])
local dead_max = ARGV[2]
local retention = tonumber(ARGV[3])   -- ms the message index keeps it; 0: no index
-- ARGV[4..]: per part: entry id, message id, marker ttl (s; 0: the index remembers), chunk
-- (0-based), payload, wake, n partners, then the n partner ids

--@include wake_partners
--@include fan_out

-- Which partners of a part have the message already, by the message index (nil: none);
-- `here` holds the messages this call routed (it writes the index at its end), and a second
-- part of one of those in one call is a duplicate.
local function by_index(index_key, message_id, partners_at, n, here)
  if here[message_id] then
    return nil, -1
  end
  local fields = {}
  for i = 1, n do
    fields[i] = message_id .. '\t' .. ARGV[partners_at + i - 1]
  end
  local found = redis.call('HMGET', index_key, unpack(fields))
  local had, missing = {}, 0
  for i = 1, n do
    had[i] = found[i] ~= false
    if not had[i] then
      missing = missing + 1
    end
  end
  if missing == 0 then
    return nil, -1
  end
  return had, nil
end

-- The same by the marker, which it moves on when the part goes.
local function by_marker(marker, entry_id, chunk)
  local seen = redis.call('GET', marker)
  local done = 0
  if seen then
    local owner, count = string.match(seen, '^(%S+) (%d+)$')
    done = tonumber(count or 0)
    if owner ~= entry_id or chunk < done then
      return -1
    end
  end
  if chunk > done then
    return -2
  end
  return nil
end

local out = {0}
local waking, indexed, here = {}, {}, {}
local key_at, a = 4, 4
while a <= #ARGV do
  local entry_id, message_id, ttl = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local chunk, payload, wake, n = tonumber(ARGV[a + 3]), ARGV[a + 4], ARGV[a + 5],
    tonumber(ARGV[a + 6])
  local marker, index_key = KEYS[key_at], KEYS[key_at + 1]
  local had, skip = nil, nil
  if ttl == 0 then
    had, skip = by_index(index_key, message_id, a + 7, n, here)
  else
    skip = by_marker(marker, entry_id, chunk)
  end
  if skip then
    out[#out + 1] = skip
  else
    out[#out + 1] = fan_out(waking, indexed, index_key, dead, dead_max, now, retention,
                            payload, message_id, wake, key_at + 2, a + 7, n, had)
    here[message_id] = true
    if ttl > 0 then
      redis.call('SET', marker, entry_id .. ' ' .. (chunk + 1), 'EX', ttl)
    end
  end
  key_at = key_at + 2 + 2 * n
  a = a + 7 + n
end
out[1] = wake_partners(ready, leases, waking, now)
write_index(indexed, retention)
return out
