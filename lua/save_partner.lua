-- save_partner.lua: write a partner's record if it is still the one the writer read, in one
-- step with what goes with it: the change log routers follow, the set of disabled partners,
-- and, for an enabled partner with messages waiting, its wake-up. Every change of a partner
-- (an operator's PATCH, a rotation, notifier disabling it on a 410) reads the record, builds
-- the new one and saves it here; one that finds the record changed meanwhile reads it again
-- and builds again, so no change is ever lost to another made at the same time.
-- Returns {1 when saved, 0 when the record changed meanwhile; 1 when a delivery process is
-- to be roused, else 0}.
local partners = KEYS[1]       -- the shard's partner records
local changes = KEYS[2]        -- their change log
local disabled = KEYS[3]       -- the shard's disabled partners
local ready = KEYS[4]          -- the shard's ready
local leases = KEYS[5]         -- the shard's leases
local stream = KEYS[6]         -- the partner's stream
local failing = KEYS[7]        -- the partner's failing run
local breaker = KEYS[8]        -- the partner's breaker
local partner = ARGV[1]
local expected = ARGV[2]       -- the record the writer read; '' for a partner that is new
local record = ARGV[3]
local enabled = ARGV[4] == '1'
local enabling = ARGV[5] == '1'  -- it was disabled: its failing run and breaker start over
local now = tonumber(ARGV[6])
local changes_kept = ARGV[7]

--@include wake_partners

if (redis.call('HGET', partners, partner) or '') ~= expected then
  return {0, 0}
end
redis.call('HSET', partners, partner, record)
redis.call('XADD', changes, 'MAXLEN', '~', changes_kept, '*', 'id', partner)
if not enabled then
  redis.call('SADD', disabled, partner)
  return {1, 0}
end
redis.call('SREM', disabled, partner)
if enabling then
  redis.call('DEL', failing, breaker)
end
-- it may have messages waiting (new, or kept while it was disabled)
local ok, length = pcall(redis.call, 'XLEN', stream)  -- a broken key is not ours to fix
if ok and length > 0 then
  return {1, wake_partners(ready, leases, {partner}, now)}
end
return {1, 0}
