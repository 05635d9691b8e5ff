-- take.lua: take up to `want` messages of one partner that may be sent now, atomically with the
-- rate-limit slots they use. The slot is taken before the message is read, so nothing is read
-- and then held; due retries, then messages whose sender died (their visibility timeout in
-- `inflight` passed), come before new messages. Every message taken is in `inflight` until it
-- is settled: its score is when it becomes visible to other processes again.
-- Returns {blocked_until_ms, paced concurrency (0: not paced), ms of the partner's last success
-- the pace knows (0: none), id1, payload1, attempt1, spared1, id2, ...}: `spared` counts the
-- message's attempts pacing absorbed. blocked_until is 0 unless the partner has work it may not
-- send yet (rate limit, pace or concurrency full, a pause, or the head of an ordered partner),
-- and -1 when the partner's stream is gone (partner removed, or Redis lost its data): then
-- nothing is written, so no key of a partner that no longer exists is brought back. A reply of
-- blocked_until alone (the window is full) tells nothing of the pace.
--
-- The rate limit is a sliding window of counters, one per fiftieth of it, and their sum, in
-- one string (window.lua): a take costs the same three commands whatever the limit and
-- however many requests it grants (a log would add a member per request).
-- Exact: never more than `limit` requests in any window of `window_ms` by any clock of the
-- partner's. The oldest slice, partly out of the window, counts whole; a request is stamped at
-- its take and, once settled, moved to when its answer came (settle.lua), by which time the
-- partner had it; one still in flight whose take slice left the window counts until it is
-- settled, as it may reach the partner any time until then. The whole oldest slice costs at
-- most a fiftieth of the window, so a partner held to its limit gets about 98 % of it, less
-- what its answers take (answering in 100 ms: about 90 % of a per-second limit). Within the
-- window requests are spread over tenths (at most ceil(limit / 10) a tenth), so a partner
-- sees a steady flow rather than one burst a window.
--
-- While the partner is paced (it said it was overloaded: `settle.lua`), its pace holds it below
-- its own limits: its effective concurrency cuts `want`, its effective rate becomes the limit
-- the window below enforces (a partner without a rate limit then gets a window too), and a
-- pause it asked for (Retry-After) holds everything back until it ends.
local stream = KEYS[1]         -- notifier:{id}:stream
local due = KEYS[2]            -- notifier:{id}:due       retries: id -> ms due
local inflight = KEYS[3]       -- notifier:{id}:inflight  taken: id -> ms visible again
local window = KEYS[4]         -- notifier:{id}:slices     the counters above
local ready = KEYS[5]          -- the shard's ready
local leases = KEYS[6]         -- the shard's leases
local pace = KEYS[7]           -- notifier:{id}:pace     while paced: r, c, p (paused until), o
local spared = KEYS[8]         -- notifier:{id}:spared   id -> its attempts pacing absorbed
local group = ARGV[1]
local consumer = ARGV[2]
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])       -- at most max_in_flight (1000), less this serve's open
local limit = tonumber(ARGV[5])      -- requests per window, at most 1e6; 0: no limit
local window_ms = tonumber(ARGV[6])  -- at most 24 h; without a limit, the window a pace uses
local ordered = ARGV[7] == '1'
local lease_until = tonumber(ARGV[8])  -- renews the lease; 0: keep the current one
local partner = ARGV[9]
local visible_ms = tonumber(ARGV[10])  -- NOTIFIER_CLAIM_IDLE: when an unsettled send is retried
local pacing = ARGV[11] == '1'          -- NOTIFIER_PACING
local most = tonumber(ARGV[12])  -- max_in_flight over every process (0: counted by the caller)
local open_ms = tonumber(ARGV[13])  -- a request taken longer ago is over (0: visible_ms)
-- a partner whose open requests fill its concurrency looks again after this long
local PACE_RECHECK_MS = 100

if redis.call('EXISTS', stream) == 0 then
  return {-1}
end
if lease_until > 0 then
  redis.call('ZADD', ready, 'XX', lease_until, partner)
  redis.call('ZADD', leases, lease_until, partner)
end

--@include window

-- Requests of any process still out: a serve gives its partner back with its requests open, so
-- the next serve, here or in another process, shares the partner's concurrency with them. Only
-- those taken within `open_ms` count: a dead process's stop counting once their timeout has
-- passed, long before their visibility timeout lets them be retried.
local open = nil
local function open_now()
  if open == nil then
    local since = now
    if open_ms > 0 then since = now + math.max(0, visible_ms - open_ms) end
    open = redis.call('ZCOUNT', inflight, '(' .. since, '+inf')
  end
  return open
end

local paced, last_ok = 0, 0
if pacing then
  local p = redis.call('HMGET', pace, 'r', 'c', 'p', 'o')
  local rate = tonumber(p[1])
  -- (a pace that is not one settle.lua wrote is no pace: settle.lua deletes it)
  if rate and rate > 0 and tonumber(p[2]) then
    paced = math.max(1, math.min(1000, math.floor(tonumber(p[2]))))
    last_ok = tonumber(p[4]) or 0
    local paused = tonumber(p[3]) or 0
    if paused > now then
      return {paused, paced, last_ok}
    end
    want = math.min(want, paced - open_now())
    local paced_limit, paced_window = math.floor(rate * window_ms / 1000), window_ms
    if paced_limit < 1 then
      -- under one request a window: one request per 1/rate
      paced_limit, paced_window = 1, math.ceil(1000 / rate)
    end
    if limit == 0 or paced_limit < limit then
      limit, window_ms = paced_limit, paced_window
    end
  end
end
if most > 0 then
  want = math.min(want, most - open_now())
end
if want <= 0 then
  return {now + PACE_RECHECK_MS, paced, last_ok}
end

local blocked = 0
local slots = nil
if limit > 0 then
  slots = window_open(window, inflight, now, limit, window_ms, visible_ms)
  if slots.blocked_until then
    window_close(slots, 0)
    return {slots.blocked_until}
  end
  want = math.min(want, slots.free)
end

local out = {blocked, paced, last_ok}
local taken = 0
local sent = {}  -- (visible again at, id) pairs for `inflight`, added in one call
local function flush_sent()
  if #sent > 0 then
    redis.call('ZADD', inflight, unpack(sent))
    sent = {}
  end
end
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, want)
if #ids < want then
  local lost = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, want - #ids)
  for _, id in ipairs(lost) do ids[#ids + 1] = id end
end
if #ids > 0 then
  local claimed = redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))
  local any_spared = redis.call('EXISTS', spared) == 1
  local found = {}
  for _, entry in ipairs(claimed) do
    if entry and entry[1] then
      found[entry[1]] = true
      local info = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2][2]
      out[#out + 1] = info[1][4]
      out[#out + 1] = any_spared and tonumber(redis.call('HGET', spared, entry[1]) or 0) or 0
      redis.call('ZREM', due, entry[1])
      sent[#sent + 1] = now + visible_ms
      sent[#sent + 1] = entry[1]
      taken = taken + 1
    end
  end
  for _, id in ipairs(ids) do
    if not found[id] then
      -- acknowledged or deleted meanwhile: its times are stale
      redis.call('ZREM', due, id)
      redis.call('ZREM', inflight, id)
    end
  end
end

flush_sent()
-- (counted only for an ordered partner: nothing else needs the count)
if ordered and redis.call('ZCARD', due) + redis.call('ZCARD', inflight) > taken then
  -- the head is being sent or waiting for its retry: nothing behind it may pass
  if taken == 0 then
    local head = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
    local oldest = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
    local at = tonumber(head[2] or oldest[2])
    if oldest[2] and tonumber(oldest[2]) < at then at = tonumber(oldest[2]) end
    out[1] = at
  end
elseif taken < want and not (ordered and taken > 0) then
  local ok, read = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer,
                         'COUNT', want - taken, 'STREAMS', stream, '>')
  if not ok and string.find(tostring(read.err or read), 'NOGROUP') then
    -- a stream written before its group existed (the stream itself exists: checked above)
    redis.call('XGROUP', 'CREATE', stream, group, '0')
    read = redis.call('XREADGROUP', 'GROUP', group, consumer,
                      'COUNT', want - taken, 'STREAMS', stream, '>')
  elseif not ok then
    return redis.error_reply(tostring(read.err or read))
  end
  if read then
    for _, entry in ipairs(read[1][2]) do
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2][2]
      out[#out + 1] = 1
      out[#out + 1] = 0
      sent[#sent + 1] = now + visible_ms
      sent[#sent + 1] = entry[1]
      taken = taken + 1
    end
  end
end
flush_sent()

if slots then
  -- only a limited partner keeps a window: without a limit nothing reads it
  window_close(slots, taken)
end
return out
