-- window.lua: included by take.lua and settle.lua: a partner's rate-limit window as counters
-- over slices (take.lua's header says how it stays exact). The hash `slices` holds
--   <slice index>  requests stamped in that slice (a slice is `w` ms: a hundredth of the window)
--   n              their sum over the slices from `o` on (older ones are deleted as they leave)
--   o, l           the oldest slice counted, the latest written
--   w              the slice width the indexes are in (a changed limit starts a fresh window)
--   p, c           the tenth of the window being filled (in slices / 10) and its requests
-- Reads and writes are a few commands a take whatever the limit: HMGET, HSET, PEXPIRE, and
-- as slices leave an HMGET and HDEL of those.

local SLICES = 100  -- per window; ratelimit.py's SLICES says the same
local SPREAD = 10   -- tenths of the window, each at most ceil(limit / SPREAD)

local function slice_width(window_ms)
  return math.max(1, math.floor(window_ms / SLICES))
end

-- The slice indexes from a to b (at most a window's worth: callers bound the range).
local function indexes(a, b)
  local out = {}
  for i = a, b do
    out[#out + 1] = i
  end
  return out
end

-- The window at `now`: slices that left it dropped from the sum, what may still be sent now
-- (`free`), or when it may next (`blocked_until`). Nothing is written until window_close.
local function window_open(key, inflight, now, limit, window_ms, visible_ms)
  local width = slice_width(window_ms)
  local cur = math.floor(now / width)
  local first = math.floor((now - window_ms) / width)  -- the oldest slice still in the window
  local st = redis.call('HMGET', key, 'n', 'o', 'l', 'w', 'p', 'c', cur)
  local w = {key = key, width = width, cur = cur, window_ms = window_ms,
             spread = math.floor(cur / SPREAD), dirty = false,
             n = tonumber(st[1]) or 0, o = tonumber(st[2]), l = tonumber(st[3]),
             here = tonumber(st[7]) or 0, in_spread = 0}
  if w.l == nil or w.l < first or tonumber(st[4]) ~= width then
    -- empty, every slice gone, or counted in another width: a fresh window
    if w.l ~= nil then
      redis.call('DEL', key)
    end
    w.n, w.o, w.l, w.here, w.dirty = 0, first, cur, 0, true
  else
    if tonumber(st[5]) == w.spread then
      w.in_spread = tonumber(st[6]) or 0
    end
    if w.o < first then
      local gone = indexes(w.o, math.min(first - 1, w.l))
      for _, count in ipairs(redis.call('HMGET', key, unpack(gone))) do
        w.n = w.n - (tonumber(count) or 0)
      end
      redis.call('HDEL', key, unpack(gone))
      w.o, w.dirty = first, true
    end
  end
  -- sent before the window, or any time since: counted until settled
  local early = redis.call('ZCOUNT', inflight, '-inf', '(' .. (first * width + visible_ms))
  local per_spread = math.ceil(limit / SPREAD)
  if w.n + early >= limit then
    w.blocked_until = now + width
    if w.n > 0 then
      -- when the oldest slice that holds a request leaves the window
      local span = indexes(w.o, w.l)
      for k, count in ipairs(redis.call('HMGET', key, unpack(span))) do
        if (tonumber(count) or 0) > 0 then
          w.blocked_until = (span[k] + 1) * width + window_ms
          break
        end
      end
    end
  elseif w.in_spread >= per_spread then
    w.blocked_until = (w.spread + 1) * SPREAD * width
  else
    w.free = math.min(limit - w.n - early, per_spread - w.in_spread)
  end
  return w
end

-- Write what the take did: `taken` requests stamped in the current slice.
local function window_close(w, taken)
  if taken > 0 then
    redis.call('HSET', w.key, 'n', w.n + taken, 'o', w.o, 'l', math.max(w.l, w.cur),
               'w', w.width, 'p', w.spread, 'c', w.in_spread + taken, w.cur, w.here + taken)
  elseif w.dirty then
    redis.call('HSET', w.key, 'n', w.n, 'o', w.o, 'l', w.l, 'w', w.width)
  else
    return
  end
  redis.call('PEXPIRE', w.key, w.window_ms * 2)
end

-- Settle's part: requests stamped at their take moved to the slice their answers came in, so
-- that a request that waited (for the CPU, in the partner's queue) counts until the partner
-- surely had it. `moves` are (ms taken, ms answered) of requests settled now for the first
-- time (still in `inflight`).
local function window_move(key, window_ms, moves)
  local width = slice_width(window_ms)
  local st = redis.call('HMGET', key, 'n', 'o', 'l', 'w')
  local n, o, l = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])
  if n == nil or tonumber(st[4]) ~= width then
    return  -- no window (or one counted in another width): nothing to correct
  end
  local delta, fields = {}, {}
  local function add(slice, by)
    if not delta[slice] then
      delta[slice] = 0
      fields[#fields + 1] = slice
    end
    delta[slice] = delta[slice] + by
  end
  for i = 1, #moves, 2 do
    local from = math.floor(tonumber(moves[i]) / width)
    local to = math.floor(tonumber(moves[i + 1]) / width)
    if to > from and to >= o then
      if from >= o then
        add(from, -1)
      else
        n = n + 1  -- its slice had left the sum while it was in flight
      end
      add(to, 1)
      if to > l then
        l = to
      end
    end
  end
  if #fields == 0 then
    return
  end
  local counts = redis.call('HMGET', key, unpack(fields))
  local out = {'n', n, 'l', l}
  for k, slice in ipairs(fields) do
    out[#out + 1] = slice
    out[#out + 1] = math.max(0, (tonumber(counts[k]) or 0) + delta[slice])
  end
  redis.call('HSET', key, unpack(out))
end
