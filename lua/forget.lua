-- forget.lua: delete the route markers of messages whose ingress entries are acknowledged:
-- with no producer id to dedupe, a marker only guards a routing that may run again, and once
-- the entry is acknowledged none will (keys of one shard; returns how many were deleted).
return redis.call('DEL', unpack(KEYS))
