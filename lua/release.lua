-- release.lua: give a partner back after serving it, scored by when it next has work.
-- Looking for "nothing left" and removing it must be one step: a message the router appends
-- between a separate check and ZREM would be stranded with its partner out of `ready`.
-- A process that lost Redis while serving releases late: if its lease ran out and another
-- process holds the partner now, `ready` and `leases` are that holder's and are left alone.
-- Messages taken by a take whose reply never arrived are visible again at once rather than at
-- the end of their visibility timeout: they carry the score that take gave them in `inflight`.
-- When the partner is due now, or sooner than anything else in `ready`, the caller puts a
-- token on `notifier:wake` (rouse.lua) to rouse a blocked delivery process (to lease it, or to
-- set its timer to that time).
-- Returns {when the partner is next due, -1 when it was removed from `ready`, -2 when another
-- process holds it; 1 when a delivery process should be roused, else 0}.
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
local stream = KEYS[3]         -- notifier:{id}:stream
local due = KEYS[4]            -- notifier:{id}:due
local inflight = KEYS[5]       -- notifier:{id}:inflight
local messages = KEYS[6]       -- notifier:{id}:messages
local partner = ARGV[1]
local now = tonumber(ARGV[2])
local blocked = tonumber(ARGV[3])  -- ms until which it may not send (rate limit, ordered head)
local active = ARGV[4] == '1'      -- '0': disabled, keep its messages but do not schedule it
local held_until = tonumber(ARGV[5])  -- the latest lease end this process set
local retention = tonumber(ARGV[6])   -- ms the message index keeps a message (0: none)
-- ARGV[7..]: `inflight` scores given by takes whose replies were lost

if redis.call('EXISTS', stream) == 0 then
  redis.call('ZREM', ready, partner)
  redis.call('ZREM', leases, partner)
  return {-1, 0}
end
-- the message index is trimmed here, once a serve, rather than once a message
if retention > 0 then
  redis.call('XTRIM', messages, 'MINID', math.max(0, now - retention))
end

for i = 7, #ARGV do
  local lost = redis.call('ZRANGEBYSCORE', inflight, ARGV[i], ARGV[i], 'LIMIT', 0, 1000)
  for _, id in ipairs(lost) do
    redis.call('ZADD', inflight, now, id)
  end
end
local lease = redis.call('ZSCORE', leases, partner)
if lease and tonumber(lease) > held_until then
  return {-2, 0}
end

local next_due = nil
-- Acknowledged entries are deleted, and every pending one is in `due` or `inflight`: the rest
-- are new.
if redis.call('XLEN', stream) > redis.call('ZCARD', due) + redis.call('ZCARD', inflight) then
  next_due = now
end
for _, times in ipairs({due, inflight}) do
  local first = redis.call('ZRANGE', times, 0, 0, 'WITHSCORES')
  if first[2] and (next_due == nil or tonumber(first[2]) < next_due) then
    next_due = tonumber(first[2])
  end
end

if next_due == nil or not active then
  redis.call('ZREM', ready, partner)
  redis.call('ZREM', leases, partner)
  return {-1, 0}
end
if blocked > next_due then
  next_due = blocked
  redis.call('ZADD', leases, blocked, partner)
else
  redis.call('ZREM', leases, partner)
end
redis.call('ZREM', ready, partner)
local earliest = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
redis.call('ZADD', ready, next_due, partner)
if next_due <= now or not earliest[2] or next_due < tonumber(earliest[2]) then
  return {next_due, 1}
end
return {next_due, 0}
