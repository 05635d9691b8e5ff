-- ack.lua: acknowledge routed ingress entries and, unless they are kept (the ops stream is
-- read by people), delete them: the partner streams hold what is still to be delivered.
-- Returns how many entries were acknowledged (0 for those another router acknowledged).
local ingress = KEYS[1]
local group = ARGV[1]
local keep = ARGV[2] == '1'
-- ARGV[3..]: entry ids, at most a read batch's worth

local acked = redis.call('XACK', ingress, group, unpack(ARGV, 3))
if not keep then
  redis.call('XDEL', ingress, unpack(ARGV, 3))
end
return acked
