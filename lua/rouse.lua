-- rouse.lua: put a wake-up token on `notifier:wake` for a delivery process blocked waiting for
-- work. The token is the number of the shard that has work, so the process woken leases from
-- that shard first. The list is capped: a few tokens wake every idle process; more is noise.
local wake = KEYS[1]           -- notifier:wake
local kept = tonumber(ARGV[1])
-- ARGV[2..]: tokens

redis.call('LPUSH', wake, unpack(ARGV, 2))
redis.call('LTRIM', wake, 0, kept - 1)
return 0
