-- pace.lua (included by settle.lua): a partner's pace, told what a settled batch came to.
-- A partner that answers 429, 502, 503, 504 or times out ("throttles") is paced: `take.lua`
-- holds it to an effective rate r (requests/s) and concurrency c below its own limits. Kept in
-- the partner's `pace` hash, shared by every delivery process, changed only here, in the settle
-- of the batch that brought the news (no round trip of its own).
-- - The first throttle starts the pace at BETA of the most the partner accepted in one second
--   lately (what it can take a second, as far as anyone knows), c at BETA of what was in use.
--   With nothing accepted yet, r starts at a request a second per request in use. The count
--   may be low (a process that heard of the partner a moment ago counted part of a second),
--   so until its first shrink a new pace probes: its step doubles every second from the
--   start. A rate is always paced: throttles pacing absorbs are sent again as soon as the
--   pace allows, and with no rate, instant refusals would be sent again by the thousand.
-- - After that, a throttle of a request sent SHRINK_GAP_MS or more after the last shrink
--   shrinks r and c by BETA (c from what was in use): a partner that counts requests over a
--   second refuses for a second what it counted before the shrink, which says nothing new.
-- - Each success grows r by STEP of the rate it last shrank from per second, up to that rate
--   (additive: the sawtooth stays near where the partner refused), then by a step doubled for
--   every whole second it keeps up past it (up to BOOST_MAX times: a partner whose capacity
--   came back is found within seconds); c grows by C_STEP a second, doubled every second
--   since the last shrink. BETA, STEP and the doubling were measured (README, Pacing).
-- - A Retry-After on 429 or 503 pauses the partner until then: `take.lua` holds everything.
-- - Pacing ends once r and c are back at the partner's own limits, or a minute after the last
--   batch or pause. Without a rate limit it ends `quiet` ms (the request timeout and a
--   second: a timeout is heard of that late) after r reached twice the rate it last shrank
--   from, and stays there meanwhile. Ending as it got there sent a partner that refuses by
--   holding requests a burst at full concurrency, which it held past the timeout: the pace
--   that followed began with every request in use stuck, and seconds without a delivery.
-- Fields: r, c; s when pacing started, y why (the last throttle), d when r last shrank, g when
-- it last grew, m the rate it last shrank from, x when r grew past m, h when it reached where
-- it may end (0: not yet), p the end of a pause, o the last success.
local BETA = 0.8
local STEP = 0.05
local C_STEP = 1
local BOOST_MAX = 64
local MIN_RATE = 0.1
local SHRINK_GAP_MS = 1000
local PACE_TTL_MS = 60000

-- `told`: "<max_in_flight> <rate limit per s, 0: none> <throttles> <ms the latest throttled
-- request was sent> <ms a pause asked for ends, 0: none> <the most requests accepted in one
-- second lately> <ms of the last success the caller saw, 0: none> <why> <quiet ms>"
-- Returns {0 nothing, 1 started, 2 shrunk, 3 grown, 4 ended; r per 1000 s; floor(c); pause end}.
local function repace(told, any_ok, batch)
  local a = {}
  for word in string.gmatch(told, '%S+') do
    a[#a + 1] = word
  end
  local most, ceiling, throttles = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
  local latest, pause, accepted = tonumber(a[4]), tonumber(a[5]), tonumber(a[6])
  local seen_ok, why, quiet = tonumber(a[7]), a[8], tonumber(a[9] or 0)
  local t = tonumber(now)
  local p = redis.call('HMGET', pace, 'r', 'c', 'd', 'g', 'm', 'p', 'o', 'x', 'h', 's')
  local r, c = tonumber(p[1]), tonumber(p[2])
  local d, g, m = tonumber(p[3]), tonumber(p[4]), tonumber(p[5])
  local paused, last_ok, x = tonumber(p[6] or 0), tonumber(p[7] or 0), tonumber(p[8] or 0)
  local h, since = tonumber(p[9] or 0) or 0, tonumber(p[10] or 0) or 0
  if p[1] and not (r and r > 0 and c and d and g and m and paused and last_ok and x) then
    -- not a pace this script wrote (edited by hand?): start again rather than fail every batch
    redis.call('DEL', pace)
    r = nil
    paused, last_ok, x, h = 0, 0, 0, 0
  end
  if not r and throttles == 0 then
    return {0, 0, 0, 0}  -- not paced, and nothing to pace it for
  end
  local top = ceiling > 0 and ceiling or math.huge
  local change = 0
  if throttles > 0 and (not r or latest >= d + SHRINK_GAP_MS) then
    local in_use = redis.call('ZCARD', inflight) + batch
    local from = r
    if not r then
      change = 1
      c = most
      redis.call('HSET', pace, 's', t)
    else
      change = 2
    end
    if not r then
      from = accepted > 0 and accepted or math.max(1, math.min(most, in_use))
    end
    m = math.min(from, top)
    r = math.max(MIN_RATE, m * BETA)
    if why ~= 'held' then
      -- (a held request says the rate is too high; what is in use then is mostly held)
      c = math.max(1, math.min(c, in_use) * BETA)
    end
    d, g, x, h = t, t, 0, 0
    if change == 1 then
      x = t
    end
  elseif throttles == 0 and any_ok then
    local dt = math.min(t - g, 1000)
    if dt > 0 then
      local boost = 1
      if x == 0 and r >= m then
        x = t
      end
      if x > 0 then
        boost = math.min(BOOST_MAX, 2 ^ math.floor((t - x) / 1000))
      end
      r = r + STEP * m * boost * dt / 1000
      local c_boost = math.min(BOOST_MAX, 2 ^ math.floor(math.max(0, t - d) / 1000))
      c = c + C_STEP * c_boost * dt / 1000
      g = t
      change = 3
    end
    local limit = ceiling > 0 and ceiling or 2 * m
    if c >= most and r >= limit then
      if ceiling > 0 or (h > 0 and t - h >= quiet) then
        redis.call('DEL', pace)
        return {4, math.floor(r * 1000), math.floor(c), 0}
      end
      if h == 0 then
        h = t
      end
    end
    -- A new pace's m is a count that may be low (above), so until its first shrink it grows
    -- on to find the partner's rate; once a shrink said where that is, not past twice it.
    r, c = math.min(r, (ceiling > 0 or d > since) and limit or top), math.min(c, most)
  end
  if throttles > 0 and pause > paused then
    paused = pause
    -- c's growth, and the second before a throttle may shrink it again, start at its end
    d = math.max(d, pause)
  end
  if any_ok then
    last_ok = t
  elseif seen_ok > last_ok then
    last_ok = seen_ok
  end
  redis.call('HSET', pace, 'r', r, 'c', c, 'd', d, 'g', g, 'm', m, 'p', paused, 'o', last_ok,
             'x', x, 'h', h)
  if throttles > 0 then
    redis.call('HSET', pace, 'y', why)
  end
  redis.call('PEXPIRE', pace, math.max(0, paused - t) + PACE_TTL_MS)
  return {change, math.floor(r * 1000), math.floor(c), paused > t and paused or 0}
end
