-- release.lua: give a partner back after serving it, scored by when it next has work.
-- Looking for "nothing left" and removing it must be one step: a message the router appends
-- between a separate check and ZREM would be stranded with its partner out of `ready`.
local ready = KEYS[1]          -- notifier:ready
local leases = KEYS[2]         -- notifier:leases
local stream = KEYS[3]         -- notifier:{id}:stream
local due = KEYS[4]            -- notifier:{id}:due
local partner = ARGV[1]
local now = tonumber(ARGV[2])
local blocked = tonumber(ARGV[3])  -- ms until which it may not send (rate limit, ordered head)
local active = ARGV[4] == '1'      -- '0': disabled, keep its messages but do not schedule it

local next_due = nil
-- Acknowledged entries are deleted, and every pending one has a due time: the rest are new.
if redis.call('XLEN', stream) > redis.call('ZCARD', due) then
  next_due = now
end
local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
if first[2] and (next_due == nil or tonumber(first[2]) < next_due) then
  next_due = tonumber(first[2])
end

if next_due == nil or not active then
  redis.call('ZREM', ready, partner)
  redis.call('ZREM', leases, partner)
  return -1
end
if blocked > next_due then
  next_due = blocked
  redis.call('ZADD', leases, blocked, partner)
else
  redis.call('ZREM', leases, partner)
end
redis.call('ZADD', ready, next_due, partner)
return next_due
