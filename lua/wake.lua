-- wake.lua: mark partners as having work now (a partner saved, enabled or given replayed
-- messages), by the same rule as route.lua's fan-out.
local ready = KEYS[1]          -- notifier:ready
local leases = KEYS[2]         -- notifier:leases
local now = tonumber(ARGV[1])
-- ARGV[2..]: partner ids

--@include wake_partner

for i = 2, #ARGV do
  wake_partner(ready, leases, ARGV[i], now)
end
return 0
