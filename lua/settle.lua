-- settle.lua: record a batch of attempts of one partner and act on every outcome in one step:
-- delivered and dead-lettered messages are acknowledged, deleted and forgotten together, failed
-- ones get their next due time and history, so a crash never leaves a message half-settled
-- (acknowledged but still due, dead-lettered but still pending, or lost). Rate-limit slots are
-- moved to when their answers came (window.lua).
-- Running the same batch twice (a process that lost Redis settles again what it may already
-- have settled) changes nothing more: only a message still pending is retried or
-- dead-lettered. A partner whose stream is gone (removed, or Redis lost its data) gets no key
-- written back.
-- While pacing is on, the batch also tells the partner's pace (below) what it came to.
-- Returns {the ms since which every attempt failed (0 when one of this batch succeeded, or when
-- the stream is gone), 1 when a success closed an open breaker, what became of the pace (0
-- nothing, 1 pacing started, 2 shrunk, 3 grown, 4 ended), its rate in requests per 1000 s, its
-- concurrency, the ms its pause ends (0: none)}.
local stream = KEYS[1]         -- notifier:{id}:stream
local due = KEYS[2]            -- notifier:{id}:due
local inflight = KEYS[3]       -- notifier:{id}:inflight
local history = KEYS[4]        -- notifier:{id}:history
local attempts = KEYS[5]       -- notifier:{id}:attempts
local failing = KEYS[6]        -- notifier:{id}:failing
local dead = KEYS[7]           -- the shard's dead letters
local window = KEYS[8]         -- notifier:{id}:slices  the rate-limit window (window.lua)
local breaker = KEYS[9]        -- notifier:{id}:breaker
local pace = KEYS[10]          -- notifier:{id}:pace
local spared = KEYS[11]        -- notifier:{id}:spared
local group = ARGV[1]
local kept = tonumber(ARGV[2]) -- attempts kept per partner (about: see the XADD below)
local dead_kept = ARGV[3]      -- dead letters kept
local partner = ARGV[4]
local now = ARGV[5]
local any_ok = string.find(ARGV[6], 'o', 1, true) ~= nil      -- one of the batch succeeded
local retried = string.find(ARGV[6], 'r', 1, true) ~= nil     -- one had failed before
local maybe_failing = string.find(ARGV[6], 'f', 1, true) ~= nil  -- failing/breaker may be set
local endpoint_failed = string.find(ARGV[6], 'e', 1, true) ~= nil  -- a failure at the endpoint
local n_done = tonumber(ARGV[7])   -- delivered ids
local n_retry = tonumber(ARGV[8])  -- (id, due ms, attempt record, '1' when pacing absorbed it)
local n_dead = tonumber(ARGV[9])   -- (id, reason, message, attempt record, at) quintuples
local n_moved = tonumber(ARGV[10])  -- (id, ms taken, ms answered) of requests answered in a
                                    -- later slice of the window than their take's
local window_ms = tonumber(ARGV[11])  -- the rate limit's window (0: no limit)
local told = ARGV[12]              -- what the pace is told: '' nothing, else see `repace`
-- then n_index, the home's prefix, the generation of producer ids and the retention in ms
-- (index.lua), and n_index (message id, entry id, 'd' delivered | 'r' retrying | 'x' dead,
-- attempt) for the message index (the delivery process sends only 'x': a copy that left the
-- stream otherwise was delivered, which a look-up tells), then the attempt records, one per
-- argument, to the end

if redis.call('EXISTS', stream) == 0 then
  return {0, 0, 0, 0, 0, 0}
end

--@include window
--@include index
--@include pace

-- A message's failed attempts are kept as one JSON array; this one is appended to it.
local function with_earlier(id, record)
  local earlier = redis.call('HGET', history, id)
  if earlier then
    return string.sub(earlier, 1, -2) .. ',' .. record .. ']'
  end
  return '[' .. record .. ']'
end

-- Window moves first, while every request of the batch is still in `inflight`: only requests
-- settled now for the first time move, so a batch settled again moves nothing twice.
local moved_at = 13 + n_done + 4 * n_retry + 5 * n_dead
if n_moved > 0 and window_ms > 0 then
  local ids = {}
  for k = 0, n_moved - 1 do
    ids[#ids + 1] = ARGV[moved_at + 3 * k]
  end
  local still = redis.call('ZMSCORE', inflight, unpack(ids))
  local moves = {}
  for k = 0, n_moved - 1 do
    if still[k + 1] then
      moves[#moves + 1] = ARGV[moved_at + 3 * k + 1]
      moves[#moves + 1] = ARGV[moved_at + 3 * k + 2]
    end
  end
  window_move(window, window_ms, tonumber(now), moves)
end

local i = 13
local finished = {}
for _ = 1, n_done do
  finished[#finished + 1] = ARGV[i]
  i = i + 1
end
for _ = 1, n_retry do
  -- only a message still in flight: settled once already, it is in `due` (or gone)
  if redis.call('ZREM', inflight, ARGV[i]) == 1 then
    redis.call('ZADD', due, ARGV[i + 1], ARGV[i])
    redis.call('HSET', history, ARGV[i], with_earlier(ARGV[i], ARGV[i + 2]))
    if ARGV[i + 3] == '1' then
      redis.call('HSET', spared, ARGV[i], (tonumber(redis.call('HGET', spared, ARGV[i])) or 0) + 1)
    end
  end
  i = i + 4
end
local dead_ids = {}
for _ = 1, n_dead do
  -- acknowledged here, one by one: a message settled already is not dead-lettered twice
  if redis.call('XACK', stream, group, ARGV[i]) == 1 then
    dead_ids[ARGV[i]] = redis.call('XADD', dead, 'MAXLEN', '~', dead_kept, '*',
               'reason', ARGV[i + 1],
               'partner', partner, 'message', ARGV[i + 2],
               'attempts', with_earlier(ARGV[i], ARGV[i + 3]),
               'at', ARGV[i + 4])
    finished[#finished + 1] = ARGV[i]
  end
  i = i + 5
end
i = i + 3 * n_moved
local n_index = tonumber(ARGV[i])
local home, gen_ms, retention = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
local states = {d = 'delivered', r = 'retrying', x = 'dead'}
for j = 0, n_index - 1 do
  local at = i + 4 + 4 * j
  local message_id, entry, outcome = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  -- a message past its retention is not brought back; a dead letter made by an earlier run
  -- of this batch is not recorded twice
  if outcome ~= 'x' or dead_ids[entry] then
    local t = tonumber(now)
    local bucket = index_locate(home, message_id, t, gen_ms, t - retention)
    local value = bucket and redis.call('HGET', bucket, message_id)
    local copies, event, current = '', '', nil
    if value then
      copies, event = index_split(value)
      current = index_copy(copies, partner)
    end
    -- a retry or a late delivery is news of this copy only: one resent meanwhile has moved on
    -- to its new entry, which the index names and a look-up follows
    local same = current == entry or
                 (current and string.find(current, '"e":"' .. entry .. '"', 1, true) ~= nil)
    if value and (outcome == 'x' or same) then
      local state = cjson.encode({s = states[outcome], e = entry, t = t,
                                  n = tonumber(ARGV[at + 3]), x = dead_ids[entry]})
      redis.call('HSET', bucket, message_id, index_with(copies, partner, state) .. '\n' .. event)
    end
  end
end
i = i + 4 + 4 * n_index
if #finished > 0 then
  redis.call('XACK', stream, group, unpack(finished))
  redis.call('XDEL', stream, unpack(finished))
  redis.call('ZREM', inflight, unpack(finished))
  if retried then  -- a message on its first try has no retry time nor history to forget
    redis.call('ZREM', due, unpack(finished))
    redis.call('HDEL', history, unpack(finished))
    redis.call('HDEL', spared, unpack(finished))
  end
end
-- The batch's attempts as one entry (a JSON array). The log keeps about `kept` attempts, not
-- entries: it is capped at as many entries of this batch's size as make `kept` (an entry is
-- up to max_in_flight attempts). `~` trims whole stream nodes only, so this costs next to
-- nothing when there is nothing to trim.
if i <= #ARGV then
  local batch = #ARGV - i + 1
  redis.call('XADD', attempts, 'MAXLEN', '~', math.max(1, math.ceil(kept / batch)), '*',
             'b', '[' .. table.concat(ARGV, ',', i, #ARGV) .. ']')
end
local paced = {0, 0, 0, 0}
if told ~= '' then
  paced = repace(told, any_ok, n_done + n_retry + n_dead)
end
if any_ok then
  if not maybe_failing then
    return {0, 0, unpack(paced)}
  end
  redis.call('DEL', failing)
  return {0, redis.call('DEL', breaker), unpack(paced)}
end
if not endpoint_failed then
  -- only failures of notifier's own making (a transform), or answers pacing absorbed: they
  -- start no failing run
  return {0, 0, unpack(paced)}
end
redis.call('SET', failing, now, 'NX')
return {tonumber(redis.call('GET', failing)), 0, unpack(paced)}
