-- remove_partner.lua: remove a partner with everything of it, in one step, and tell the
-- routers. Returns 1, or 0 when there was no such partner.
local partners = KEYS[1]       -- the shard's partner records
local changes = KEYS[2]        -- their change log
local disabled = KEYS[3]       -- the shard's disabled partners
local ready = KEYS[4]          -- the shard's ready
local leases = KEYS[5]         -- the shard's leases
-- KEYS[6..]: the partner's own keys
local partner = ARGV[1]
local changes_kept = ARGV[2]

if redis.call('HDEL', partners, partner) == 0 then
  return 0
end
redis.call('ZREM', ready, partner)
redis.call('ZREM', leases, partner)
redis.call('SREM', disabled, partner)
redis.call('DEL', unpack(KEYS, 6))
redis.call('XADD', changes, 'MAXLEN', '~', changes_kept, '*', 'id', partner)
return 1
