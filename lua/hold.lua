-- hold.lua: take a lock when it is free, or renew it when it is ours, in one step (a GET then
-- a SET would let two processes both believe they hold it). Used to pick the one process that
-- reports the deployment's shared gauges.
-- Returns 1 when `me` holds the lock now, 0 when another process does.
local lock = KEYS[1]
local me = ARGV[1]
local ttl_ms = ARGV[2]

local holder = redis.call('GET', lock)
if holder and holder ~= me then
  return 0
end
redis.call('SET', lock, me, 'PX', ttl_ms)
return 1
