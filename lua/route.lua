-- route.lua: append ingress messages to the streams of their partners in one shard, each
-- message at most once. The router acknowledges an ingress entry only after every shard it
-- goes to has it, so a router that dies in between leaves the entry to be routed again; what
-- the shard remembers of the message makes that second routing append nothing twice.
-- A fan-out to many partners in one shard is split into chunks, one part each, so no single
-- call holds Redis for long; several small messages share one call.
-- What the shard remembers, by the part's marker ttl:
-- - 0: the message index (index.lua), which keeps the message longer than anything needs:
--   its copies say which partners have it (so a producer's id published twice, or a part
--   routed again, appends only to partners without it);
-- - else (no index, or one kept shorter than the producer-id dedupe) the marker `seen`,
--   "<entry id> <chunks done>", for that many seconds: another entry's id there is the same
--   producer id published twice, skipped; this entry's id says up to which chunk it is in.
-- The index is read and written once per hash a call touches (HMGET, HSET, PEXPIRE), however
-- many messages share it, and a producer's ids once per generation: what a message costs
-- beyond its appends does not grow with the call.
-- Returns {1 when a partner became due now (the caller rouses a delivery process) else 0,
-- then per part: the partner streams it went to, -1 when routed already (or a duplicate), -2
-- when an earlier chunk is missing}.
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
local dead = KEYS[3]           -- the shard's dead letters
-- KEYS[4..]: per part: its marker, then per partner its stream and its list of messages
local now = tonumber(ARGV[1])
local dead_max = ARGV[2]
local retention = tonumber(ARGV[3])   -- ms the message index keeps it; 0: no index
local home = ARGV[4]                  -- the prefix of the shard's records (index.lua)
local gen_ms = tonumber(ARGV[5])      -- a generation of producer ids, ms
local dedupe_ms = tonumber(ARGV[6])   -- how far back a producer's id is looked for
local grace_ms = tonumber(ARGV[7])    -- how long a generation outlives its look-ups
-- ARGV[8..]: per part: entry id, message id, marker ttl (s; 0: the index remembers), chunk
-- (0-based), payload, wake, n partners, its index hash (the message id's when notifier named
-- it, else the entry's: the caller works it out, which Redis would pay for), '1' when
-- notifier named it, then the n partner ids

--@include wake_partners
--@include index
--@include fan_out

-- By the marker, which it moves on when the part goes.
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

local parts = {}
local key_at, a = 4, 8
while a <= #ARGV do
  local n = tonumber(ARGV[a + 6])
  parts[#parts + 1] = {entry = ARGV[a], id = ARGV[a + 1], ttl = tonumber(ARGV[a + 2]),
                       chunk = tonumber(ARGV[a + 3]), payload = ARGV[a + 4], wake = ARGV[a + 5],
                       n = n, bucket = ARGV[a + 7], named = ARGV[a + 8] == '1',
                       partners_at = a + 9, marker = KEYS[key_at], keys_at = key_at + 1}
  key_at = key_at + 1 + 2 * n
  a = a + 9 + n
end

-- Where each message is in the index, and what it holds there already: producer ids through
-- their generations (with the index remembering), newest first; then each hash's fields.
local first_entry = {}   -- producer id -> the entry it was first routed from
local first_bucket = {}  -- producer id -> its hash
local fresh = {}         -- producer ids no generation knows yet
local held = {}          -- bucket .. '\n' .. id -> {copies, event, bucket, id}
local gen = math.floor(now / gen_ms)
if retention > 0 then
  local unknown = {}
  for _, p in ipairs(parts) do
    if p.ttl == 0 and not p.named and not unknown[p.id] then
      unknown[p.id] = true
      unknown[#unknown + 1] = p.id
    end
  end
  local g = gen
  while #unknown > 0 and g >= math.floor((now - dedupe_ms) / gen_ms) do
    local found = redis.call('HMGET', index_generation(home, g), unpack(unknown))
    local left = {}
    for i, id in ipairs(unknown) do
      if found[i] then
        first_entry[id] = found[i]
        first_bucket[id] = index_bucket(home, found[i])
      else
        left[#left + 1] = id
      end
    end
    unknown, g = left, g - 1
  end
  local buckets = {}
  for _, p in ipairs(parts) do
    if not p.named then
      if not first_entry[p.id] then
        -- new here: the first of its entries in this call is where it goes, and the
        -- generation learns it if it goes anywhere
        first_entry[p.id], first_bucket[p.id], fresh[p.id] = p.entry, p.bucket, true
      end
      p.bucket = first_bucket[p.id]
    end
    local ids = buckets[p.bucket]
    if not ids then
      ids = {}
      buckets[p.bucket] = ids
      buckets[#buckets + 1] = p.bucket
    end
    if not ids[p.id] then
      ids[p.id] = true
      ids[#ids + 1] = p.id
    end
  end
  for _, bucket in ipairs(buckets) do
    local values = redis.call('HMGET', bucket, unpack(buckets[bucket]))
    for i, id in ipairs(buckets[bucket]) do
      if values[i] then
        local copies, event = index_split(values[i])
        held[bucket .. '\n' .. id] = {copies = copies, event = event, bucket = bucket, id = id}
      end
    end
  end
end

-- Which partners of a part have the message already (nil: none), or -1 when all do.
local function by_index(p, record)
  if not record then
    return nil, nil
  end
  local had, missing = {}, 0
  for i = 1, p.n do
    had[i] = index_copy(record.copies, ARGV[p.partners_at + i - 1]) ~= nil
    if not had[i] then
      missing = missing + 1
    end
  end
  if missing == 0 then
    return nil, -1
  end
  return had, nil
end

local out = {0}
local waking, changed, named_now = {}, {}, {}
for _, p in ipairs(parts) do
  local record = retention > 0 and held[p.bucket .. '\n' .. p.id]
  local had, skip = nil, nil
  if p.ttl == 0 then
    had, skip = by_index(p, record)
  else
    skip = by_marker(p.marker, p.entry, p.chunk)
  end
  if skip then
    out[#out + 1] = skip
  else
    local routed, copies = fan_out(waking, dead, dead_max, now, retention, p.payload, p.id,
                                   p.wake, p.keys_at, p.partners_at, p.n, had)
    out[#out + 1] = routed
    if #copies > 0 then
      if not record then
        record = {event = p.payload, bucket = p.bucket, id = p.id}
        held[p.bucket .. '\n' .. p.id] = record
        if fresh[p.id] then
          fresh[p.id] = nil
          named_now[#named_now + 1] = p.id
          named_now[#named_now + 1] = first_entry[p.id]
        end
      end
      local added = table.concat(copies, '\t')
      record.copies = record.copies and (record.copies .. '\t' .. added) or added
      if not record.changed then
        record.changed = true
        changed[#changed + 1] = record
      end
    end
    if p.ttl > 0 then
      redis.call('SET', p.marker, p.entry .. ' ' .. (p.chunk + 1), 'EX', p.ttl)
    end
  end
end
out[1] = wake_partners(ready, leases, waking, now)

-- One HSET and one PEXPIRE per hash, however many of the call's messages it holds (a call
-- holds at most 50 messages and 64 partners: well within what unpack takes).
local by_bucket, order = {}, {}
for _, record in ipairs(changed) do
  local fields = by_bucket[record.bucket]
  if not fields then
    fields = {}
    by_bucket[record.bucket] = fields
    order[#order + 1] = record.bucket
  end
  fields[#fields + 1] = record.id
  fields[#fields + 1] = record.copies .. '\n' .. record.event
end
for _, bucket in ipairs(order) do
  redis.call('HSET', bucket, unpack(by_bucket[bucket]))
  redis.call('PEXPIRE', bucket, retention)
end
if #named_now > 0 then
  -- kept until the retention of the generation's last message (the janitor unlinks it then;
  -- its TTL is the fallback)
  local ids = index_generation(home, gen)
  redis.call('HSET', ids, unpack(named_now))
  redis.call('PEXPIRE', ids, (gen + 1) * gen_ms + retention - now + grace_ms)
end
return out
