-- wake.lua: mark partners as having work now (a partner saved, enabled or given replayed
-- messages), by the same rule as route.lua's fan-out; a partner with nothing in its stream is
-- left alone, so saving a partner costs no delivery process a look.
local ready = KEYS[1]          -- notifier:ready
local leases = KEYS[2]         -- notifier:leases
local wake = KEYS[3]           -- notifier:wake
-- KEYS[4..]: the partners' streams, in the order of their ids
local now = tonumber(ARGV[1])
-- ARGV[2..]: partner ids

--@include wake_partners

local waking = {}
for i = 2, #ARGV do
  local ok, length = pcall(redis.call, 'XLEN', KEYS[2 + i])  -- a broken key is not ours to fix
  if ok and length > 0 then
    want_woken(waking, ARGV[i])
  end
end
wake_partners(ready, leases, wake, waking, now)
return 0
