-- wake_partner.lua: included by the scripts that give a partner new work (route, wake).
-- A partner under lease or parked at its rate limit keeps its score: its holder (or the end of
-- the park) looks at its stream again then. Bringing a leased partner forward would let a
-- second process serve it beside the holder. Otherwise it is due now.
local function wake_partner(ready, leases, partner, now)
  local parked = redis.call('ZSCORE', leases, partner)
  if not parked or tonumber(parked) <= now then
    redis.call('ZADD', ready, 'LT', now, partner)  -- adds it, or brings it forward
  end
end
