-- wake_partner.lua: included by the scripts that give a partner new work (route, wake).
-- A partner under lease or parked at its rate limit keeps its score: its holder (or the end of
-- the park) looks at its stream again then. Bringing a leased partner forward would let a
-- second process serve it beside the holder. Otherwise it is due now, and when that is news
-- (it was not due yet), a token on `wake` rouses a delivery process blocked waiting for work.
local function wake_partner(ready, leases, wake, partner, now)
  local parked = redis.call('ZSCORE', leases, partner)
  if not parked or tonumber(parked) <= now then
    if redis.call('ZADD', ready, 'LT', 'CH', now, partner) == 1 then
      redis.call('LPUSH', wake, partner)
      redis.call('LTRIM', wake, 0, 63)  -- a few tokens wake every idle process; more is noise
    end
  end
end
