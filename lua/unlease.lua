-- unlease.lua: a lease call whose reply never arrived (the connection broke) leased partners
-- nobody serves. They carry that call's lease end in `leases`, which is how they are found:
-- they become due now instead of waiting for the lease to run out (NOTIFIER_CLAIM_IDLE).
-- Returns how many partners were given back (the caller rouses a delivery process if any).
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
local now = tonumber(ARGV[1])
local lease_until = ARGV[2]    -- the lost call's lease end

local lost = redis.call('ZRANGEBYSCORE', leases, lease_until, lease_until, 'LIMIT', 0, 1000)
for _, partner in ipairs(lost) do
  redis.call('ZREM', leases, partner)
  redis.call('ZADD', ready, 'XX', now, partner)
end
return #lost
