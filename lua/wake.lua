-- wake.lua: mark partners as having work now (a partner saved, enabled or given replayed
-- messages), by the same rule as route.lua's fan-out; a partner with nothing in its stream is
-- left alone, so saving a partner costs no delivery process a look. The partners are of one
-- shard. Returns 1 when one became due now (the caller rouses a delivery process), else 0.
local ready = KEYS[1]          -- the shard's ready
local leases = KEYS[2]         -- the shard's leases
-- KEYS[3..]: the partners' streams, in the order of their ids
local now = tonumber(ARGV[1])
-- ARGV[2..]: partner ids

--@include wake_partners

local waking = {}
for i = 2, #ARGV do
  local ok, length = pcall(redis.call, 'XLEN', KEYS[1 + i])  -- a broken key is not ours to fix
  if ok and length > 0 then
    want_woken(waking, ARGV[i])
  end
end
return wake_partners(ready, leases, waking, now)
