-- lease.lua: hand the due partners to one delivery process, at most `count`, earliest first.
-- Pushing each score to the lease's end in the same step is what stops two processes from
-- taking the same partner; a holder that dies simply lets the lease run out.
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
local partners = KEYS[3]       -- the shard's partner records
local now = tonumber(ARGV[1])
local lease_until = tonumber(ARGV[2])
local count = tonumber(ARGV[3])

redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
local ids = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, count)
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', ready, lease_until, id)
  redis.call('ZADD', leases, lease_until, id)
  local config = redis.call('HGET', partners, id)
  if config then
    out[#out + 1] = id
    out[#out + 1] = config
  else
    -- a deleted partner: forget it
    redis.call('ZREM', ready, id)
    redis.call('ZREM', leases, id)
  end
end
local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
local next_due = -1
if first[2] then next_due = tonumber(first[2]) end
return {next_due, out}
