-- dead_event.lua: move a malformed ingress entry to `notifier:dead`, once. The router
-- acknowledges the entry after this; a router that dies in between leaves it to be handled
-- again, and the marker (in the dead letters' slot, so both are written in one step) keeps
-- that from writing a second dead letter.
-- Returns 1 when the dead letter was written, 0 when it was already.
local dead = KEYS[1]           -- notifier:dead
local marker = KEYS[2]         -- the entry's marker
local entry_id = ARGV[1]
local reason = ARGV[2]
local entry = ARGV[3]          -- the whole entry, as text
local dead_max = ARGV[4]
local ttl = ARGV[5]

if not redis.call('SET', marker, '1', 'NX', 'EX', ttl) then
  return 0
end
redis.call('XADD', dead, 'MAXLEN', '~', dead_max, '*', 'reason', reason,
           'entry_id', entry_id, 'entry', entry)
return 1
