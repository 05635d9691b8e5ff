-- window.lua: included by take.lua and settle.lua: a partner's rate-limit window as counters
-- over slices (take.lua's header says how it stays exact), in one string, `slices`:
--   a header, big-endian 64-bit integers: n the requests of the slices from o on, o the
--   oldest slice counted, l the latest written, w the slice width the indexes are in (a
--   changed limit starts a fresh window), p the tenth of the window being filled (in
--   slices / PER_TENTH) and c its requests;
--   then RING 32-bit counters: slice i's at (i mod RING), zero outside [o, l].
-- A take reads it with one GET and writes it with one SET (its TTL included), whatever the
-- limit and however many requests it grants. Numbers cross as packed binary (the `struct`
-- library): Lua formats a number as text with sprintf, which costs more than a command.

local SLICES = 50   -- per window; ratelimit.py's SLICES says the same
local SPREAD = 10   -- tenths of the window, each at most ceil(limit / SPREAD)
local PER_TENTH = SLICES / SPREAD
local RING = SLICES + 2  -- the slices from the oldest in the window to the current, and one
local HEAD = '>i8i8i8i8i8i8'
local HEAD_BYTES = 48

local function slice_width(window_ms)
  return math.max(1, math.floor(window_ms / SLICES))
end

-- The window as a table (`ring` its counters by position), or a fresh one from `first`. One
-- counted in another width (the partner's limit changed) starts afresh with its requests
-- that may still be in the new window all stamped now: that may hold the partner back up to
-- a window longer than needed, never let it past the new limit.
local function window_read(text, width, first, cur)
  local carried = 0
  if text and #text == HEAD_BYTES + 4 * RING then
    local n, o, l, w, p, c = struct.unpack(HEAD, text)
    if w == width and l >= first then
      return {n = n, o = o, l = l, p = p, c = c, text = text, changed = {}}
    end
    if w ~= width and (l + 1) * w > first * width then
      carried = n
    end
  end
  local fresh = {n = carried, o = first, l = cur, p = -1, c = 0, changed = {}, fresh = true,
                 dirty = true}
  if carried > 0 then
    fresh.changed[cur % RING] = carried
  end
  return fresh
end

-- Slice i's counter.
local function window_get(w, i)
  local at = i % RING
  if w.changed[at] then
    return w.changed[at]
  end
  if w.fresh then
    return 0
  end
  return (struct.unpack('>I4', w.text, HEAD_BYTES + 4 * at + 1))
end

local function window_set(w, i, count)
  w.changed[i % RING] = count
end

-- Drop from the sum the slices that left the window (from o up to `first`).
local function window_leave(w, first)
  if w.o < first then
    for i = w.o, math.min(first - 1, w.l) do
      local count = window_get(w, i)
      if count > 0 then
        w.n = w.n - count
        window_set(w, i, 0)
      end
    end
    w.o, w.dirty = first, true
  end
end

-- The string to store: the header, and the ring with the changed counters spliced in (the
-- unchanged spans copied whole).
local function window_text(w, width)
  local head = struct.pack(HEAD, w.n, w.o, w.l, width, w.p, w.c)
  if w.fresh then
    local ring = {}
    for at = 0, RING - 1 do
      ring[at + 1] = struct.pack('>I4', w.changed[at] or 0)
    end
    return head .. table.concat(ring)
  end
  local at = {}
  for position in pairs(w.changed) do
    at[#at + 1] = position
  end
  table.sort(at)
  local out, from = {head}, HEAD_BYTES + 1
  for _, position in ipairs(at) do
    local start = HEAD_BYTES + 4 * position + 1
    out[#out + 1] = string.sub(w.text, from, start - 1)
    out[#out + 1] = struct.pack('>I4', w.changed[position])
    from = start + 4
  end
  out[#out + 1] = string.sub(w.text, from)
  return table.concat(out)
end

-- The window at `now`: slices that left it dropped from the sum, what may still be sent now
-- (`free`), or when it may next (`blocked_until`). Nothing is written until window_close.
local function window_open(key, inflight, now, limit, window_ms, visible_ms)
  local width = slice_width(window_ms)
  local cur = math.floor(now / width)
  local first = math.floor((now - window_ms) / width)  -- the oldest slice still in the window
  local w = window_read(redis.call('GET', key), width, first, cur)
  w.key, w.width, w.cur, w.window_ms = key, width, cur, window_ms
  w.spread = math.floor(cur / PER_TENTH)
  window_leave(w, first)
  local in_spread = w.p == w.spread and w.c or 0
  -- sent before the window, or any time since: counted until settled
  local early = redis.call('ZCOUNT', inflight, '-inf', '(' .. (first * width + visible_ms))
  local per_spread = math.ceil(limit / SPREAD)
  if w.n + early >= limit then
    w.blocked_until = now + width
    for i = w.o, w.l do
      if window_get(w, i) > 0 then
        -- when the oldest slice that holds a request leaves the window
        w.blocked_until = (i + 1) * width + window_ms
        break
      end
    end
  elseif in_spread >= per_spread then
    w.blocked_until = (w.spread + 1) * PER_TENTH * width
  else
    w.free = math.min(limit - w.n - early, per_spread - in_spread)
  end
  w.in_spread = in_spread
  return w
end

-- Write what the take did: `taken` requests stamped in the current slice (kept twice the
-- window: a partner that stops sending leaves nothing behind).
local function window_close(w, taken)
  if taken == 0 and not w.dirty then
    return
  end
  if taken > 0 then
    window_set(w, w.cur, window_get(w, w.cur) + taken)
    w.n = w.n + taken
    w.l = math.max(w.l, w.cur)
    w.p, w.c = w.spread, w.in_spread + taken
  end
  redis.call('SET', w.key, window_text(w, w.width), 'PX', w.window_ms * 2)
end

-- Settle's part: requests stamped at their take moved to the slice their answers came in, so
-- that a request that waited (for the CPU, in the partner's queue) counts until the partner
-- surely had it. `moves` are (ms taken, ms answered) of requests settled now for the first
-- time (still in `inflight`).
local function window_move(key, window_ms, now, moves)
  local width = slice_width(window_ms)
  local first = math.floor((now - window_ms) / width)
  local w = window_read(redis.call('GET', key), width, first, math.floor(now / width))
  if w.fresh then
    return  -- no window (or one counted in another width, or all gone): nothing to correct
  end
  window_leave(w, first)  -- so that every slice moved to is within the ring's reach
  local moved = false
  for i = 1, #moves, 2 do
    local from = math.floor(tonumber(moves[i]) / width)
    local to = math.floor(tonumber(moves[i + 1]) / width)
    if to > from and to >= w.o then
      if from >= w.o and from <= w.l then
        window_set(w, from, math.max(0, window_get(w, from) - 1))
      else
        w.n = w.n + 1  -- its slice had left the sum while it was in flight
      end
      window_set(w, to, window_get(w, to) + 1)
      if to > w.l then
        w.l = to
      end
      moved = true
    end
  end
  if moved then
    redis.call('SET', key, window_text(w, width), 'KEEPTTL')
  end
end
