-- wake.lua: mark partners as having work now, unless a partner is leased or parked at its rate
-- limit: its holder (or the end of the park) looks at its stream then. Bringing a leased
-- partner forward would let a second process serve it beside the holder.
-- (route.lua does the same inline, atomically with its fan-out.)
local ready = KEYS[1]          -- notifier:ready
local leases = KEYS[2]         -- notifier:leases
local now = tonumber(ARGV[1])
-- ARGV[2..]: partner ids

for i = 2, #ARGV do
  local parked = redis.call('ZSCORE', leases, ARGV[i])
  if not parked or tonumber(parked) <= now then
    redis.call('ZADD', ready, 'LT', now, ARGV[i])
  end
end
return 0
